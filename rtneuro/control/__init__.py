"""Steering a running graph: live parameters, operator actions and the control API.

``live``
    The live-parameter schema of a graph and the validation of changes (the
    same code and messages as the configuration's).
``hub``
    The supervisor's side: requests from any client, applied through the
    services, recorded as the session's ``rtneuro.control`` stream.
``auth``
    Tokens (observer and steer roles) and TLS.
``server``
    The REST + WebSocket server (FastAPI on uvicorn, in its own thread).
``client``
    The client the command line and scripts use.
"""
