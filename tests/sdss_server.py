"""A local stand-in for the SDSS Science Archive Server that misbehaves on request (tests only).

``FaultyServer(files, faults)`` serves ``files`` (URL path → bytes) on 127.0.0.1 from a background
thread and answers 404 for any other path. ``faults`` maps a path to a script of actions, one per
request, after which the file is served normally; an action ending in ``*`` repeats forever.

Actions: ``ok``; an HTTP status such as ``500`` or ``403`` (empty error body); ``drop`` (announce the
full Content-Length, send half the body, close the connection); ``drop:N`` (the same, but stop N
bytes before the end); ``reset`` (the same, but end with a
TCP reset); ``slow:S`` (wait S seconds before answering, to outlast a client timeout); ``delay:S``
(wait S seconds, then serve normally); ``notfits`` (200 with an HTML page instead of the file).

``requests`` counts GETs per path; ``max_in_flight`` is the most requests waiting in a delay at once.
Also here: :func:`make_spec_bytes`, a small but valid SDSS-I/II spec-lite file built with astropy.
"""

from __future__ import annotations

import io
import socket
import struct
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

NOT_FITS_BODY = b"<html><body><h1>Service temporarily unavailable</h1></body></html>\n"


def sas_path(plate: int, mjd: int, fiber: int, survey: str = "sdss", run2d: str = "26",
             release: str = "dr17") -> str:
    """URL path of a spec-lite file on the SAS, below the base URL's ``/sas``."""
    return (f"/sas/{release}/{survey}/spectro/redux/{run2d}/spectra/lite/{plate:04d}/"
            f"spec-{plate:04d}-{mjd:05d}-{fiber:04d}.fits")


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        state = self.server.state
        action = state.next_action(self.path)
        try:
            self._perform(action, state)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. after its timeout): expected for "slow"

    def _perform(self, action: str, state: "_State") -> None:
        body = state.files.get(self.path)
        if action.startswith("slow:") or action.startswith("delay:"):
            # Concurrency is measured over the waits: a sequential client cannot overlap two of them,
            # whereas counting up to the last byte written races with the client's next request.
            with state.lock:
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            state.stopping.wait(float(action.split(":", 1)[1]))
            with state.lock:
                state.in_flight -= 1
        if action.isdigit():
            self._send(int(action), b"")
        elif action == "notfits":
            self._send(200, NOT_FITS_BODY, "text/html")
        elif body is None:
            self._send(404, b"")
        elif action in ("drop", "reset") or action.startswith("drop:"):
            cut = int(action.split(":", 1)[1]) if ":" in action else len(body) - len(body) // 2
            self._send_cut(body, cut, reset=action == "reset")
        else:
            self._send(200, body)

    def _send(self, status: int, body: bytes, content_type: str = "application/fits") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_cut(self, body: bytes, cut: int, reset: bool) -> None:
        """Announce all of ``body``, send all but its last ``cut`` bytes, then close (FIN or RST)."""
        self.send_response(200)
        self.send_header("Content-Type", "application/fits")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) - cut])
        self.wfile.flush()
        self.close_connection = True
        if reset:  # SO_LINGER 0: close() sends RST instead of FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            self.connection.shutdown(socket.SHUT_RDWR)
        self.connection.close()

    def log_message(self, format, *args):  # keep test output clean
        pass


class _State:
    def __init__(self, files: dict[str, bytes], faults: dict[str, list[str]]):
        self.files = dict(files)
        self.scripts = {path: list(script) for path, script in faults.items()}
        self.requests: Counter = Counter()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.in_flight = 0
        self.max_in_flight = 0

    def next_action(self, path: str) -> str:
        with self.lock:
            self.requests[path] += 1
            script = self.scripts.get(path) or []
            if not script:
                return "ok"
            if script[0].endswith("*"):
                return script[0][:-1]
            return script.pop(0)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State


class FaultyServer:
    """A fault-injecting HTTP server on 127.0.0.1; use as a context manager."""

    def __init__(self, files: dict[str, bytes], faults: dict[str, list[str]] | None = None):
        self.state = _State(files, faults or {})
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "FaultyServer":
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.state = self.state
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.state.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/sas``: what ``download_spectra(base_url=...)`` takes."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/sas"

    @property
    def requests(self) -> Counter:
        """GETs received per URL path."""
        return self.state.requests

    @property
    def max_in_flight(self) -> int:
        return self.state.max_in_flight

    def set_faults(self, faults: dict[str, list[str]]) -> None:
        """Replace the fault scripts and zero the request counts (for a second run)."""
        with self.state.lock:
            self.state.scripts = {path: list(script) for path, script in faults.items()}
            self.state.requests.clear()
            self.state.max_in_flight = 0


def make_spec_bytes(plate: int, mjd: int, fiber: int, z: float = 0.05, npix: int = 300,
                    spec_class: str = "GALAXY", seed: int = 0) -> bytes:
    """A small SDSS-I/II-style spec-lite file: PRIMARY, COADD and SPECOBJ HDUs, as bytes."""
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    loglam = (3.5800 + 1e-4 * np.arange(npix)).astype(np.float32)
    flux = (10 + rng.normal(0, 1, npix)).astype(np.float32)
    coadd = fits.BinTableHDU.from_columns([
        fits.Column("flux", "E", array=flux),
        fits.Column("loglam", "E", array=loglam),
        fits.Column("ivar", "E", array=np.ones(npix, np.float32)),
        fits.Column("and_mask", "J", array=np.zeros(npix, np.int32)),
        fits.Column("or_mask", "J", array=np.zeros(npix, np.int32)),
        fits.Column("wdisp", "E", array=np.ones(npix, np.float32)),
        fits.Column("sky", "E", array=np.ones(npix, np.float32)),
        fits.Column("model", "E", array=flux),
    ], name="COADD")
    specobj = fits.BinTableHDU.from_columns([
        fits.Column("PLATE", "J", array=[plate]),
        fits.Column("MJD", "J", array=[mjd]),
        fits.Column("FIBERID", "J", array=[fiber]),
        fits.Column("Z", "E", array=[z]),
        fits.Column("Z_ERR", "E", array=[1e-5]),
        fits.Column("ZWARNING", "J", array=[0]),
        fits.Column("CLASS", "6A", array=[spec_class]),
        fits.Column("SUBCLASS", "21A", array=[""]),
        fits.Column("VDISP", "E", array=[120.0]),
        fits.Column("SN_MEDIAN_ALL", "E", array=[10.0]),
        fits.Column("SPECOBJID", "22A", array=[str(plate * 10**9 + fiber)]),
        fits.Column("RUN2D", "3A", array=["26"]),
    ], name="SPECOBJ")
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), coadd, specobj]).writeto(buf)
    return buf.getvalue()
