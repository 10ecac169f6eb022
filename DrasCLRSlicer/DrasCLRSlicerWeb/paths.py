"""Where the web shell may read and write: the configured data and model folders, one folder per session.

Every path that comes from a browser (a CT path typed on the page, an uploaded file's name, a model version)
goes through :class:`Workspace` before anything is opened. A path is accepted only when, with symbolic links
resolved, it lies inside the data folder (or is the bundled demo CT); an upload keeps only a plain file name
with a known image suffix. No slicer/vtk import: tested in plain Python.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import secrets
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from drasclr.core.errors import InputError

DEMO_CT = Path(__file__).resolve().parents[1] / "drasclr" / "data" / "demo_ct.nii.gz"
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


UPLOAD_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")  # self-contained: no header naming another file


class PathRejected(InputError):
    """A path from the browser that points outside the configured folders (or is not an image)."""


def default_data_root() -> Path:
    """``$DRASCLR_WEB_DATA`` or ``~/.drasclr/web``."""
    return Path(os.environ.get("DRASCLR_WEB_DATA", Path.home() / ".drasclr" / "web"))


def inside(path: Path, root: Path) -> bool:
    """True when ``path`` (resolved) is ``root`` (resolved) or lies below it."""
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return False
    return True


def has_image_suffix(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def safe_file_name(name: str) -> str:
    """A browser-supplied file name reduced to a plain name: no folders, no leading dots, known suffix."""
    base = re.split(r"[\\/]", str(name))[-1]
    base = _SAFE_NAME.sub("_", base).lstrip(".")
    if not base or not has_image_suffix(base):
        raise PathRejected(f"{name!r}: expected a CT file ending in {', '.join(IMAGE_SUFFIXES)}")
    return base[-128:] if len(base) > 128 else base


def check_upload(content: bytes, name: str, max_bytes: int) -> None:
    """An upload is refused before anything is written or read by an image reader: over ``max_bytes``, not a
    self-contained image format (a ``.nhdr``/``.mhd`` header could point at any file on the server), or not
    starting like one (NIfTI header size, ``NRRD000`` magic, MetaImage keys)."""
    if len(content) > max_bytes:
        raise PathRejected(f"{name!r}: {len(content) / 2**20:.1f} MB is over the upload limit of "
                           f"{max_bytes / 2**20:.1f} MB")
    lower = name.lower()
    if not lower.endswith(UPLOAD_SUFFIXES):
        raise PathRejected(f"{name!r}: upload a single-file CT ({', '.join(UPLOAD_SUFFIXES)})")
    head = content[:4096]
    if lower.endswith(".nii.gz"):
        try:
            head = gzip.GzipFile(fileobj=io.BytesIO(content)).read(352)
        except (OSError, EOFError):
            head = b""
    ok = {".nrrd": head.startswith(b"NRRD000"), ".mha": b"ObjectType" in head[:1024] or b"NDims" in head[:1024]}
    if lower.endswith((".nii", ".nii.gz")):
        ok = len(head) >= 4 and (struct.unpack("<i", head[:4])[0] in (348, 540)
                                 or struct.unpack(">i", head[:4])[0] in (348, 540))
    else:
        ok = ok[".nrrd" if lower.endswith(".nrrd") else ".mha"]
    if not ok:
        raise PathRejected(f"{name!r}: not a {name.rsplit('.', 1)[-1]} image (its header does not match)")


@dataclass
class Workspace:
    """The folders one server may use: ``data_root`` (sessions, uploads, CTs the server may open) and
    ``models_root`` (imported and fine-tuned model versions). Bundled models are read-only."""

    data_root: Path = field(default_factory=default_data_root)
    models_root: Path | None = None

    def __post_init__(self):
        self.data_root = Path(self.data_root).expanduser().resolve()
        self.models_root = (Path(self.models_root).expanduser().resolve() if self.models_root is not None
                            else self.data_root / "models")
        self.data_root.mkdir(parents=True, exist_ok=True)
        self.models_root.mkdir(parents=True, exist_ok=True)

    # --- sessions -------------------------------------------------------------------------------------
    @property
    def sessions_root(self) -> Path:
        return self.data_root / "sessions"

    def new_session(self) -> Session:
        return self.session(secrets.token_hex(8))

    def session(self, session_id: str) -> Session:
        if not _SESSION_ID.match(session_id or ""):
            raise PathRejected(f"bad session id {session_id!r}")
        folder = self.sessions_root / session_id
        folder.mkdir(parents=True, exist_ok=True)
        return Session(session_id, folder, self)

    # --- paths from the browser -----------------------------------------------------------------------
    def private(self) -> list[Path]:
        """Parts of the data folder no path typed on a page may reach: every session (only the page's own
        session folder is open to it), the users' folders and models, the server's run folder and audit log."""
        return [self.sessions_root, self.data_root / "users", self.data_root / "run", self.data_root / "audit.log",
                self.models_root]

    def resolve_input(self, text: str, own: Path | None = None) -> Path:
        """A CT path typed on the page: relative to the data folder or absolute, but inside it after resolving
        links, outside its :meth:`private` parts unless inside ``own`` (the page's session folder); must exist and
        be an image file or a (DICOM) folder. The bundled demo CT is always allowed."""
        text = (text or "").strip()
        if not text:
            raise PathRejected("no path given")
        if "\x00" in text:
            raise PathRejected("bad path")
        raw = Path(text).expanduser()
        path = (raw if raw.is_absolute() else self.data_root / raw).resolve()
        if path == DEMO_CT.resolve():
            return path
        if not inside(path, self.data_root):
            raise PathRejected(f"{text}: only files inside the server's data folder can be opened")
        if not (own is not None and inside(path, own)) and any(inside(path, p) for p in self.private()):
            raise PathRejected(f"{text}: not open to this session (another session's or the server's own files)")
        if not path.exists():
            raise PathRejected(f"{text}: no such file in the data folder")
        if path.is_file() and not has_image_suffix(path.name):
            raise PathRejected(f"{text}: expected a CT file ending in {', '.join(IMAGE_SUFFIXES)} or a DICOM folder")
        return path

    def resolve_model(self, text: str, bundled_root: Path) -> Path:
        """A model folder chosen on the page: inside the models folder or the bundled models."""
        path = Path(text).expanduser().resolve()
        if not (inside(path, self.models_root) or inside(path, bundled_root)):
            raise PathRejected(f"{text}: not a model of this server")
        if not (path / "model.safetensors").is_file():
            raise PathRejected(f"{text}: not a model folder")
        return path


@dataclass
class Session:
    """One browser session's files: uploads, analysis runs and exports live under ``folder``."""

    id: str
    folder: Path
    workspace: Workspace

    def upload_path(self, file_name: str) -> Path:
        folder = self.folder / "uploads"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / safe_file_name(file_name)

    def run_dir(self, kind: str) -> Path:
        """A new numbered folder for one job (``analysis-003``) inside the session."""
        if not re.match(r"^[a-z]+$", kind):
            raise ValueError(kind)
        taken = [int(p.name.rsplit("-", 1)[1]) for p in self.folder.glob(f"{kind}-*") if p.name[-3:].isdigit()]
        folder = self.folder / f"{kind}-{max(taken, default=0) + 1:03d}"
        folder.mkdir(parents=True)
        return folder

    def write_file(self, target: Path, content: bytes) -> Path:
        """Write ``content`` to ``target`` all-or-nothing (a temporary file moved into place)."""
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            tmp.write_bytes(content)
            os.replace(tmp, target)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        return target

    def export(self, name: str, write) -> Path:
        """``write(path)`` into a hidden temporary folder of the export folder, then moved to ``exports/name``:
        a failure (a full disk) leaves no half-written export."""
        folder = self.export_dir()
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
        try:
            written = Path(write(staging / name))
            os.replace(written, folder / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder / name

    def export_dir(self) -> Path:
        folder = self.folder / "exports"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def export_file(self, name: str) -> Path:
        """A file of this session's export folder by plain name (downloads are served from here only)."""
        base = re.split(r"[\\/]", str(name))[-1]
        path = (self.export_dir() / base).resolve()
        if not base or base.startswith(".") or not inside(path, self.export_dir()) or not path.is_file():
            raise PathRejected(f"{name!r}: no such export")
        return path
