"""Fetch a data set's files from the first source that has them, verifying every file's sha256.

Sources, in order: an explicit local path from params, the local mirror
(`CNNLAB_DATA_MIRROR` or `data.mirror`), Debian's data-set package, the
canonical online archive.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cnnlab.catalog.datasets import DatasetSpec, Layout
from cnnlab.util.errors import UserError
from cnnlab.util.files import atomic_path, copy_file, env_path, sha256_file

log = logging.getLogger(__name__)

MIRROR_ENV = "CNNLAB_DATA_MIRROR"


class DataUnavailableError(UserError, RuntimeError):
    """No source could provide a data set."""


class ChecksumError(UserError, RuntimeError):
    """A file's bytes are not the ones the catalogue expects."""


@dataclass(frozen=True)
class Source:
    kind: str  # "path" | "mirror" | "debian" | "online"
    location: str  # a folder, or a base URL


@dataclass(frozen=True)
class Fetched:
    dataset: str
    source: str
    location: str
    format: str
    files: dict[str, str]  # file name -> sha256
    refused: list[dict[str, str]] = field(default_factory=list)  # files not copied (symbolic links), and why

    def to_dict(self) -> dict:
        found = asdict(self)
        return found if self.refused else {k: v for k, v in found.items() if k != "refused"}


def candidate_sources(
    spec: DatasetSpec,
    path: Path | None = None,
    mirror: Path | None = None,
    debian_dir: Path | None = None,
    online: bool = True,
    online_base: str | None = None,
) -> list[Source]:
    """The sources to try for `spec`, in priority order."""
    sources = []
    if path is not None:
        sources.append(Source("path", str(path)))
    mirror = env_path(MIRROR_ENV, mirror)
    if mirror is not None:
        sources.append(Source("mirror", str(mirror / spec.mirror_dir)))
    if spec.debian and debian_dir is not None:
        sources.append(Source("debian", str(debian_dir)))
    base = online_base or spec.online_base
    if online and base and spec.online is not None:
        sources.append(Source("online", base if base.endswith("/") else base + "/"))
    return sources


def local_layout(spec: DatasetSpec, folder: Path) -> Layout | None:
    """The first layout of `spec` whose files are all present in `folder`."""
    for layout in spec.layouts:
        if all((folder / name).is_file() for name in layout.files):
            return layout
    return None


def verify(path: Path, accepted: frozenset[str], label: str | None = None) -> str:
    """The file's sha256, or a ChecksumError naming the file (`label`, else its path)."""
    digest = sha256_file(path)
    if digest not in accepted:
        raise ChecksumError(
            f"checksum mismatch for {label or path}: sha256 {digest} is not a known-good copy "
            f"(expected one of {', '.join(sorted(accepted))}). The file is damaged or not the "
            "official release: delete it and fetch it again, or point params at a good copy."
        )
    return digest


def _already_in_place(layout: Layout, dest: Path) -> dict[str, str] | None:
    if not all((dest / n).is_file() for n in layout.files):
        return None
    digests = {n: sha256_file(dest / n) for n in layout.files}
    return digests if all(digests[n] in layout.files[n] for n in layout.files) else None


def _copy_local(layout: Layout, folder: Path, dest: Path) -> dict[str, str]:
    digests = {}
    for name, accepted in layout.files.items():
        digests[name] = verify(folder / name, accepted)
        if not (dest / name).is_file() or sha256_file(dest / name) != digests[name]:
            copy_file(folder / name, dest / name)
    return digests


def download_file(url: str, target: Path, accepted: frozenset[str], timeout: float = 60.0) -> str:
    """Download `url` to `target` (atomically), logging progress, and verify it."""
    with atomic_path(target) as tmp:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done, next_report = 0, 0.1
            while block := response.read(1 << 20):
                out.write(block)
                done += len(block)
                if total and done / total >= next_report:
                    log.info("  %s: %d%% of %.1f MB", target.name, 100 * done // total, total / 1e6)
                    next_report += 0.1
        # Nothing is kept when the bytes are wrong: the temporary file is removed.
        digest = verify(tmp, accepted, label=f"{url} (downloaded for {target})")
    return digest


def _download(layout: Layout, base: str, dest: Path) -> dict[str, str]:
    digests = {}
    for name, accepted in layout.files.items():
        present = sha256_file(dest / name) if (dest / name).is_file() else None
        if present in accepted:
            digests[name] = present
            continue
        log.info("downloading %s%s", base, name)
        digests[name] = download_file(base + name, dest / name, accepted)
    return digests


def fetch(spec: DatasetSpec, sources: list[Source], dest: Path) -> Fetched:
    """Bring `spec`'s files into `dest` from the first source that has them."""
    dest.mkdir(parents=True, exist_ok=True)
    tried = []
    for source in sources:
        if source.kind == "online":
            layout = spec.online
            assert layout is not None
            try:
                digests = _download(layout, source.location, dest)
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                tried.append(f"online {source.location}: {exc}")
                continue
        else:
            folder = Path(source.location)
            layout = local_layout(spec, folder)
            if layout is None:
                wanted = " or ".join(", ".join(lay.files) for lay in spec.layouts)
                tried.append(f"{source.kind} {folder}: no {wanted}")
                continue
            digests = _already_in_place(layout, dest) or _copy_local(layout, folder, dest)
        _remove_other_layouts(spec, layout, dest)
        log.info("%s: %s from %s (%s)", spec.name, layout.format, source.kind, source.location)
        return Fetched(spec.name, source.kind, source.location, layout.format, digests)
    hint = (
        f"set data.paths.{spec.name} in params.yaml to a folder holding the files, "
        f"or {MIRROR_ENV} to a mirror with a {spec.mirror_dir}/ folder"
    )
    if spec.debian:
        hint += ", or run `apt-get install dataset-fashion-mnist`"
    listing = "\n  ".join(tried) if tried else "(no source configured)"
    raise DataUnavailableError(f"no source could provide {spec.name!r}. Tried:\n  {listing}\nFix: {hint}.")


def _remove_other_layouts(spec: DatasetSpec, kept: Layout, dest: Path) -> None:
    # A stale file of another layout would make the raw folder ambiguous.
    for layout in spec.layouts:
        if layout is kept:
            continue
        for name in layout.files:
            if name not in kept.files and (dest / name).exists():
                (dest / name).unlink()
