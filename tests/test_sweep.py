"""rtneuro sweep: specs, jobs equal to `rtneuro run --speed max`, a real Dask scheduler with two workers, resuming.

Real parts: the Dask scheduler and workers are the `dask` command line's,
started on loopback; the local cluster is distributed's LocalCluster; the
jobs run the graphs with the supervisor of `rtneuro run`, its processes as
threads of the worker; a worker killed under a job is a real SIGKILL.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from rtneuro.errors import ConfigError
from rtneuro.recording.xdf_read import read_session
from rtneuro.sweep import expand, load_spec, run_sweep
from rtneuro.sweep.job import job_config, payload, run_job

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "configs" / "sweeps" / "adbs_thresholds.yaml"

pytestmark = pytest.mark.slow  # no shared state (free ports, own folders): the tests spread over the suite's workers


def _spec(tmp_path: Path, doc: dict, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


def decisions_digest(report: dict, streams: dict) -> dict:
    """A user metric: a digest of the gate's decisions (every field but the machine's clock) and their count."""
    series, _ = streams["stim.decisions"]
    rows = [json.loads(r[0]) for r in series]
    for r in rows:
        r.pop("t", None)
    text = json.dumps(rows, sort_keys=True)
    return {"decisions": len(rows), "decisions_digest": int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)}


_calls = 0


def held_or_killed(report: dict, streams: dict) -> dict:
    """A user metric that misbehaves on request (environment variables, so that only one command is affected):
    RTNEURO_TEST_HOLD=PATH holds every job of this worker after its first while PATH exists (up to 60 s);
    RTNEURO_TEST_KILL_ONCE=PATH kills the worker (SIGKILL) unless PATH exists, creating it first."""
    global _calls
    _calls += 1
    hold = os.environ.get("RTNEURO_TEST_HOLD")
    if hold and _calls > 1:
        t_end = time.monotonic() + 60
        while os.path.exists(hold) and time.monotonic() < t_end:
            time.sleep(0.02)
    kill = os.environ.get("RTNEURO_TEST_KILL_ONCE")
    if kill and not os.path.exists(kill):
        Path(kill).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return {}


def test_a_spec_names_what_is_wrong_in_one_line(tmp_path):
    cfg = str(ROOT / "configs" / "adbs_sim.yaml")
    cases = [
        ({"config": cfg, "gird": {}}, "unknown key 'gird'"),
        ({"config": cfg, "grid": {"ctl.uper": [1]}}, "no parameter 'uper'"),
        ({"config": cfg, "grid": {"clt.upper": [1]}}, "no node 'clt'"),
        ({"config": cfg, "grid": {"upper": [1]}}, "not node.parameter"),
        ({"config": cfg, "grid": {"ctl.upper": []}}, "at least one value"),
        ({"config": cfg, "grid": {"brain.seed": [1]}, "seeds": {"brain.seed": [2]}}, "either searched or replicated"),
        ({"config": cfg, "recordings": {"files": ["nothing/*.edf"]}}, "name the source"),
        ({"config": str(ROOT / "configs" / "neurofeedback.yaml"), "recordings": {"files": ["nothing/*.edf"]}}, "matches no file"),
        ({"config": cfg, "objective": {"metric": "x", "goal": "best"}}, "goal: min or max"),
        ({"grid": {}}, "give config:"),
    ]
    for doc, words in cases:
        with pytest.raises(ConfigError) as err:
            load_spec(_spec(tmp_path, doc))
        assert words in str(err.value) and "\n" not in str(err.value), (doc, str(err.value))
    # a sweep never drives hardware, and replays recordings rather than reading LSL
    doc = yaml.safe_load((ROOT / "configs" / "stim_serial.yaml").read_text())
    with pytest.raises(ConfigError, match="never drives hardware"):
        job_config(doc, None, None, {})
    doc = yaml.safe_load((ROOT / "configs" / "lsl_alpha.yaml").read_text())
    with pytest.raises(ConfigError, match="reads LSL live"):
        job_config(doc, None, None, {})


def test_a_job_decides_what_rtneuro_run_at_max_speed_decides_and_so_does_a_job_on_its_session(tmp_path):
    # the user's own run of the neurofeedback graph (its processes as configured, recorded), a sweep job of the same
    # graph and parameters (its nodes in one process, through the sweep's code), and a sweep job over the recorded
    # session (the source replayed as it recorded it): the same gate decisions, record for record, and the same numbers
    from rtneuro.sweep.job import apply_params, flatten_report, is_timing

    doc = yaml.safe_load((ROOT / "configs" / "neurofeedback.yaml").read_text())
    apply_params(doc, {"eeg.stop_s": 20.0, "stim.timebase": "stream"})
    for n in doc["nodes"]:
        if n["type"] == "file_replay":
            n["params"]["path"] = [str((ROOT / "configs" / p).resolve()) for p in n["params"]["path"]]
    cfg = tmp_path / "nf.yaml"
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    (tmp_path / "rec").mkdir()
    out = subprocess.run([sys.executable, "-m", "rtneuro", "run", str(cfg), "--speed", "max", "--record", str(tmp_path / "rec"),
                          "--report", str(tmp_path / "live.json"), "--quiet"], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    session = next((tmp_path / "rec").glob("*.xdf"))
    plain = decisions_digest({}, {s.name: (s.time_series, s.time_stamps) for s in read_session(session).streams})
    # all but the wire's bookkeeping between processes (acknowledged, re-sent commands: the job has one process) and
    # the source's own report (a file replay's or a session replay's)
    layout = ("recorder", "commands.acked", "commands.resent", "commands.unacked", "eeg.")
    live = {k: v for k, v in flatten_report(json.loads((tmp_path / "live.json").read_text())).items()
            if not is_timing(k) and not k.startswith(layout)}
    sys.path.insert(0, str(Path(__file__).parent))
    digest = [f"{Path(__file__).stem}:decisions_digest"]
    own = load_spec(_spec(tmp_path, {"config": str(cfg), "grid": {"ctl.threshold": [3.5]}, "user_metrics": digest}, "own.yaml"))
    replayed = load_spec(_spec(tmp_path, {"config": str(cfg), "recordings": {"node": "eeg", "files": [str(session)]},
                                          "grid": {"ctl.threshold": [3.5]}, "user_metrics": digest}, "session.yaml"))
    (job,) = expand(replayed)
    assert job_config(yaml.safe_load(replayed.config_text), "eeg", job.recording.path, {})["nodes"][0]["type"] == "session_replay"
    for spec in (own, replayed):
        (job,) = expand(spec)
        row = run_job(payload(spec, job))
        assert row["status"] == "ok", row
        m = row["metrics"]
        assert m["user.decisions"] == plain["decisions"] > 5 and m["user.decisions_digest"] == plain["decisions_digest"]
        theirs = {k: v for k, v in m.items() if not is_timing(k) and not k.startswith(("user.", *layout))}
        assert set(theirs) ^ set(live) == set()
        assert theirs == live
    assert live["commands.accepted"] > 0 and live["stimulation.stim.on_fraction"] > 0 and live["summary.labels.file:S003R01.edf.frames"] > 0


def _dask_cluster(tmp_path: Path) -> tuple[str, list[subprocess.Popen]]:
    sched_file = tmp_path / "scheduler.json"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    procs = [subprocess.Popen([*dask, "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0",
                               "--scheduler-file", str(sched_file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    t_end = time.monotonic() + 60
    while not sched_file.exists() and time.monotonic() < t_end:
        time.sleep(0.1)
    address = json.loads(sched_file.read_text())["address"]
    for _ in range(2):
        procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                                       "--nworkers", "1", "--host", "127.0.0.1", "--no-dashboard"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    from distributed import Client

    with Client(address, timeout="30s") as c:
        c.wait_for_workers(2, timeout=60)
    return address, procs


def _optimize_on(address: str, tmp_path: Path) -> None:
    """--optimize on the same scheduler: Optuna's seeded sampler over a declared range; the same study twice."""
    from rtneuro.sweep.engine import run_optimize

    doc = {"name": "opt", "config": str(ROOT / "configs" / "adbs_sim.yaml"), "grid": {"brain.duration_s": 4},
           "search": {"ctl.upper": {"low": 10.0, "high": 12.5}}, "metrics": ["stimulation.*"]}
    spec = load_spec(_spec(tmp_path, doc, "opt.yaml"))
    res = run_optimize(spec, "stimulation.stim.energy_uj", 2, scheduler=address, out=None)
    trials = json.loads((spec.out / "trials.json").read_text())
    assert res["trials"] == 2 and len(trials) == 2 and all(10.0 <= t["params"]["ctl.upper"] <= 12.5 for t in trials)
    assert res["best"]["value"] == min(t["value"] for t in trials)
    df = pd.read_csv(spec.out / "results.csv")
    assert sorted(df["ctl.upper"]) == sorted(t["params"]["ctl.upper"] for t in trials)
    assert sorted(df["stimulation.stim.energy_uj"]) == sorted(t["value"] for t in trials)  # one job per trial here
    table = (spec.out / "results.csv").read_bytes()
    run_optimize(spec, "stimulation.stim.energy_uj", 2, scheduler=address, out=None)  # seeded: the same points, done
    assert (spec.out / "results.csv").read_bytes() == table
    with pytest.raises(ConfigError, match="low < high"):
        load_spec(_spec(tmp_path, {**doc, "search": {"ctl.upper": {"low": 3, "high": 1}}}, "bad.yaml"))


def test_the_shipped_decoder_sweep_on_a_dask_scheduler_with_two_workers_keeps_going_and_resumes(tmp_path):
    # the shipped motor-imagery sweep on a small grid: two recordings (copies of the shipped eyes-open baseline and
    # the labelled left/right run) times two thresholds, on a scheduler and two workers started on loopback. One
    # recording vanishes before the run: its jobs are rows with a one-line error, the others succeed; once it is
    # back, a rerun runs only the failed jobs
    data = tmp_path / "data"
    data.mkdir()
    for name in ("S003R01.edf", "S003R03.edf"):
        shutil.copy(ROOT / "replay_data" / name, data / name)
    doc = yaml.safe_load((ROOT / "configs" / "sweeps" / "motor_imagery.yaml").read_text())
    doc["config"] = str(ROOT / "configs" / "motor_imagery_replay.yaml")
    doc["recordings"]["files"] = ["data/*.edf"]
    # its decoder, calibrated as the config's comment says (rtneuro train), here into this test's folder
    from rtneuro.decoders.train import train_from_config

    train_from_config(ROOT / "configs" / "motor_imagery_replay.yaml", [ROOT / "replay_data" / "S003R03.edf"], out=tmp_path / "mi.npz")
    doc["grid"] = {"ctl.threshold": [0.6, 0.8], "mi.model": str(tmp_path / "mi.npz")}
    spec = load_spec(_spec(tmp_path, doc))
    jobs = expand(spec)
    assert [(j.recording.label, j.params["ctl.threshold"]) for j in jobs] == [  # each recording, then each point
        ("S003R01.edf", 0.6), ("S003R01.edf", 0.8), ("S003R03.edf", 0.6), ("S003R03.edf", 0.8)]
    moved = tmp_path / "S003R03.edf"
    shutil.move(data / "S003R03.edf", moved)
    address, procs = _dask_cluster(tmp_path)
    try:
        first = run_sweep(spec, scheduler=address, out=None, jobs=jobs)
        df = pd.read_parquet(spec.out / "results.parquet")
        assert first["ran"] == 4 and first["failed"] == 2
        assert list(df["status"]) == ["ok", "ok", "failed", "failed"]
        err = df["error"][2]
        assert "S003R03.edf is not visible on worker tcp://127.0.0.1:" in err and "\n" not in err
        workers = {json.loads(f.read_text())["worker"] for f in (spec.out / "jobs").glob("*.json")}
        assert len(workers) == 2  # both workers ran jobs
        shutil.move(moved, data / "S003R03.edf")
        again = run_sweep(spec, scheduler=address, out=None, jobs=jobs)
        assert again["ran"] == 2 and again["skipped"] == 2 and again["failed"] == 0
        _optimize_on(address, tmp_path)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    df = pd.read_csv(spec.out / "results.csv")
    assert list(df["status"]) == ["ok"] * 4
    assert list(df["duration_s"]) == [61.0, 61.0, 125.0, 125.0]
    # the decoder against the labels: only the labelled run has any (15 trials, 11 windows each), in-sample here
    assert df["mi.labelled_windows"].tolist() == [0, 0, 165, 165] and df["mi.accuracy"].isna().tolist() == [True, True, False, False]
    assert (df["mi.accuracy"][2:] > 0.7).all()
    on = df["stimulation.stim.on_fraction"]
    assert on[0] > on[1] and on[2] > on[3]  # a higher threshold stimulates less, at rest and in the task
    best = json.loads((spec.out / "best.json").read_text())
    assert best["overall"]["params"] == {"ctl.threshold": 0.8} and set(best["per_recording"]) == {"S003R01.edf", "S003R03.edf"}
    html = (spec.out / "report.html").read_text()
    assert "Best parameters" in html and "plots/metric0.png" in html and (spec.out / "plots" / "metric0.png").stat().st_size > 1000


def test_the_shipped_adbs_sweep_from_the_command_line_survives_ctrl_c_and_a_dead_worker_and_resumes(tmp_path, monkeypatch):
    spec = load_spec(SHIPPED)
    assert len(expand(spec)) == 24 + 4 and spec.objective == {"metric": "stimulation.stim.energy_uj", "goal": "min"}  # + the baseline per seed
    small = tmp_path / "small.yaml"
    doc = yaml.safe_load(SHIPPED.read_text())
    doc["config"] = str(ROOT / "configs" / "adbs_sim.yaml")
    doc["grid"] = {"ctl.upper": [10.0, 12.0], "brain.duration_s": 6}
    doc["seeds"] = {"brain.seed": [1]}
    doc["user_metrics"] = [f"{Path(__file__).stem}:held_or_killed"]
    small.write_text(yaml.safe_dump(doc, sort_keys=False))
    cmd = [sys.executable, "-m", "rtneuro", "sweep", str(small), "--out", str(tmp_path / "res"), "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    # Ctrl-C once the first job has its row, while the second is held: what finished stays, whole; the command says
    # how to go on
    hold = tmp_path / "hold"
    hold.touch()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**env, "RTNEURO_TEST_HOLD": str(hold)})
    jobs = tmp_path / "res" / "jobs"
    t_end = time.monotonic() + 240
    while time.monotonic() < t_end and not (jobs.exists() and list(jobs.glob("*.json"))) and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # as Ctrl-C in a terminal
    try:
        _, err = proc.communicate(timeout=3)
    except subprocess.TimeoutExpired:  # closing the cluster may wait for the held job: let it go now
        hold.unlink()
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "run the same command again to go on" in err
    done = {f.stem for f in jobs.glob("*.json")}
    assert len(done) == 1 and json.loads((jobs / f"{done.pop()}.json").read_text())["status"] == "ok"
    # the rest only (what the same command runs, here in this process: the command line ran above); the worker is
    # killed under the first of them (SIGKILL): Dask's nanny starts another, the scheduler gives it the job again,
    # and the sweep goes on
    killed = tmp_path / "killed"
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])
    monkeypatch.setenv("RTNEURO_TEST_KILL_ONCE", str(killed))  # the local cluster's workers inherit it
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    progress: list[str] = []
    res = run_sweep(dataclasses.replace(load_spec(small), out=tmp_path / "res"), workers=1, out=progress.append)
    assert killed.exists() and res["ran"] == 2 and res["skipped"] == 1 and res["failed"] == 0 and res["missing"] == 0
    assert any("1 already done" in line for line in progress)
    from rtneuro.sweep import summary

    text = summary(tmp_path / "res")
    assert text.splitlines()[0].startswith("sweep adbs-thresholds: 3 jobs, 3 ok, 0 failed") and "best (min of stimulation.stim.energy_uj)" in text
    df = pd.read_csv(tmp_path / "res" / "results.csv")
    assert list(df["ctl.upper"]) == [10.0, 12.0, 1e9] and list(df["baseline"]) == [False, False, True] and (df["status"] == "ok").all()
    assert df["stimulation.stim.energy_uj"][1] < df["stimulation.stim.energy_uj"][0]  # stepping up later stimulates less
    assert df["stimulation.stim.energy_uj"][2] == 0.0  # the baseline never stimulates
    # the beta reduction: each job's mean beta minus the unstimulated brain's (same seed); stimulating more reduces more
    red = df["summary.labels.all.mean.beta.vs_baseline"]
    assert red[2] == 0.0 and red[0] < red[1] < 0
    assert red[0] == pytest.approx(df["summary.labels.all.mean.beta"][0] - df["summary.labels.all.mean.beta"][2])
    html = (tmp_path / "res" / "report.html").read_text()
    assert "plots/metric1.png" in html and "vs_baseline" in html
    again = subprocess.run([sys.executable, "-m", "rtneuro", "sweep", "--summary", str(tmp_path / "res")],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout.splitlines()[0] == text.splitlines()[0]


def test_a_bids_dataset_is_filtered_by_its_entities_through_mne_bids(tmp_path):
    import mne
    import mne_bids

    raw = mne.io.read_raw_edf(ROOT / "replay_data" / "S003R01.edf", verbose="error")
    for sub, task in (("01", "rest"), ("02", "rest"), ("02", "other")):
        bp = mne_bids.BIDSPath(subject=sub, task=task, datatype="eeg", root=tmp_path / "bids")
        mne_bids.write_raw_bids(raw, bp, verbose="error", overwrite=True)
    doc = {"config": str(ROOT / "configs" / "neurofeedback.yaml"),
           "recordings": {"node": "eeg", "bids": {"root": "bids", "subjects": ["02"], "tasks": ["rest"], "datatypes": ["eeg"]}}}
    spec = load_spec(_spec(tmp_path, doc))
    assert [(Path(r.path).name, r.label) for r in spec.recordings] == [("sub-02_task-rest_eeg.edf", "sub-02_task-rest")]
    doc["recordings"]["bids"] = {"root": "bids", "tasks": ["rest"]}
    assert [r.label for r in load_spec(_spec(tmp_path, doc)).recordings] == ["sub-01_task-rest", "sub-02_task-rest"]
    doc["recordings"]["bids"] = {"root": "bids", "subjects": ["09"]}
    with pytest.raises(ConfigError, match="no recording in"):
        load_spec(_spec(tmp_path, doc))


def test_a_job_key_follows_the_files_its_parameters_name(tmp_path):
    # a retrained model or an edited profile is a new job; the same files and values are the same job
    profile = tmp_path / "sim.yaml"
    shutil.copy(ROOT / "hardware" / "profiles" / "simulated.yaml", profile)
    doc = {"config": str(ROOT / "configs" / "adbs_sim.yaml"), "grid": {"stim.profile": str(profile), "ctl.upper": [10.0, 11.0]}}
    keys = [j.key for j in expand(load_spec(_spec(tmp_path, doc)))]
    assert len(set(keys)) == 2 and keys == [j.key for j in expand(load_spec(_spec(tmp_path, doc)))]
    profile.write_text(profile.read_text() + "\n# edited\n")
    assert not set(keys) & {j.key for j in expand(load_spec(_spec(tmp_path, doc)))}
