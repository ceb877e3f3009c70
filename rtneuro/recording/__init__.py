"""Session recording: a crash-safe XDF writer and a reader that tolerates damaged files."""

from .xdf_read import ChunkInfo, Session, XdfStream, read_session, scan_chunks
from .xdf_writer import CHANNEL_FORMATS, RecordingError, XdfWriter, check_writable

__all__ = [
    "XdfWriter",
    "RecordingError",
    "check_writable",
    "CHANNEL_FORMATS",
    "read_session",
    "scan_chunks",
    "Session",
    "XdfStream",
    "ChunkInfo",
]
