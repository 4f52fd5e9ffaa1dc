"""Fetch a data set's files from the first source that has them, verifying every file's sha256.

Sources, in order: an explicit local path from params, the local mirror
(`CNNLAB_DATA_MIRROR` or `data.mirror`), Debian's data-set package, the
canonical online archive. An archive too large to keep (cats vs dogs' 825 MB
PetImages zip) is verified and cut into the raw folder; a downloaded one is kept
in `data/raw/.downloads/` so that a re-run does not fetch it again.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cnnlab.catalog.datasets import DatasetSpec, Layout
from cnnlab.data import petimages
from cnnlab.data.progress import byte_progress
from cnnlab.util.errors import UserError
from cnnlab.util.files import atomic_path, copy_file, env_path, sha256_file

log = logging.getLogger(__name__)

MIRROR_ENV = "CNNLAB_DATA_MIRROR"
DOWNLOADS = ".downloads"  # beside the raw folders: downloaded archives that only a cut of is kept
KEEP_GOING = "To run the stages of the other data sets anyway: `dvc repro --keep-going`."


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
    refused: list[dict[str, str]] = field(default_factory=list)  # files left out (links, bad images), and why
    cut: dict[str, object] | None = None  # for a cut: the archive, its sha256, what the cut holds and left out

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v or k not in ("refused", "cut")}


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


def download_file(
    url: str, target: Path, accepted: frozenset[str], timeout: float = 60.0, size: int | None = None
) -> str:
    """Download `url` to `target` (atomically), showing progress, and verify it; a server that announces a size
    other than `size` (the published one) is refused before a byte is read."""
    with atomic_path(target) as tmp:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            if size and total and total != size:
                raise ChecksumError(
                    f"{url} is {total} bytes, not the {size} of the known-good {target.name}: it is not the official "
                    "release (check data.online_base), or point params at a good copy"
                )
            with byte_progress(target.name, total or size) as advance:
                while block := response.read(1 << 20):
                    out.write(block)
                    advance(len(block))
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
        digests[name] = download_file(base + name, dest / name, accepted, size=layout.sizes.get(name))
    return digests


def fetch(spec: DatasetSpec, sources: list[Source], dest: Path) -> Fetched:
    """Bring `spec`'s files into `dest` from the first source that has them."""
    dest.mkdir(parents=True, exist_ok=True)
    tried = []
    for source in sources:
        if source.kind == "online":
            layout = spec.online
            assert layout is not None
            folder = dest.parent / DOWNLOADS if layout.cut else dest
            try:
                digests = _download(layout, source.location, folder)
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
            if layout.cut:
                digests = {name: verify(folder / name, accepted) for name, accepted in layout.files.items()}
            else:
                digests = _already_in_place(layout, dest) or _copy_local(layout, folder, dest)
        log.info("%s: %s from %s (%s)", spec.name, layout.format, source.kind, source.location)
        fetched = Fetched(spec.name, source.kind, source.location, layout.format, digests)
        if layout.cut:
            fetched = _cut(fetched, layout, folder, dest)
        _remove_other_layouts(spec, layout, dest)
        return fetched
    listing = "\n  ".join(tried) if tried else "(no source configured)"
    fixes = "; or ".join(_fixes(spec, sources))
    raise DataUnavailableError(
        f"no source could provide {spec.name!r}. Tried:\n  {listing}\nFix: {fixes}.\n{KEEP_GOING}"
    )


def _cut(fetched: Fetched, layout: Layout, folder: Path, dest: Path) -> Fetched:
    """The record of `layout`'s archive (verified, in `folder`) cut into `dest`: its format, file and digest are
    the cut's; the archive's name and digest and the skipped images are recorded beside them."""
    assert layout.cut and layout.format == petimages.ARCHIVE_FORMAT, f"no cut for {layout.format}"
    ((name, digest),) = fetched.files.items()
    cut = petimages.make_cut(folder / name, dest / layout.cut)
    record: dict[str, object] = {"archive": name, "sha256": digest, **cut.summary()}
    files = {layout.cut: sha256_file(dest / layout.cut)}
    return Fetched(fetched.dataset, fetched.source, fetched.location, petimages.CUT_FORMAT, files, cut.skipped, record)


def _fixes(spec: DatasetSpec, sources: list[Source]) -> list[str]:
    """What a user can do when no source has `spec`, most likely first."""
    fixes = []
    online = spec.online
    if online is not None and spec.online_base:
        urls = " and ".join(spec.online_base + name for name in online.files)
        if any(s.kind == "online" for s in sources):
            fixes.append(
                "check the network connection (a proxy is taken from HTTPS_PROXY), or set "
                f"data.online_base.{spec.name} to a server with a copy of {', '.join(online.files)}"
            )
        else:
            fixes.append("turn downloads on (data.online: true in params.yaml)")
        fixes.append(f"download {urls} yourself and set data.paths.{spec.name} in params.yaml to its folder")
    else:
        fixes.append(f"set data.paths.{spec.name} in params.yaml to a folder holding the files")
    fixes.append(f"set {MIRROR_ENV} to a mirror with a {spec.mirror_dir}/ folder")
    if spec.debian:
        fixes.append("run `apt-get install dataset-fashion-mnist`")
    return fixes


def _remove_other_layouts(spec: DatasetSpec, kept: Layout, dest: Path) -> None:
    # A stale file of another layout would make the raw folder ambiguous.
    for layout in spec.layouts:
        if layout is kept:
            continue
        for name in {*layout.files, *layout.kept} - set(kept.kept):
            if (dest / name).exists():
                (dest / name).unlink()
