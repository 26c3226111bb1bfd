"""The one rule for reusing a site's output folder (model.facility --output_dir).

A run records in its manifest.json, under "files", every file it wrote into the folder (paths
relative to it). A folder holds another run's files when it has a manifest.json, or one of the
command's own subfolders (nodes/ of --save_nodes, slurm/ of --launcher slurm, runs/ of a
--scenario sweep), which a failed run may leave behind. A run refuses such a folder before any
work, and touches nothing in it, unless --overwrite; --overwrite removes exactly

  - the files its manifest.json lists, and the manifest itself,
  - everything under nodes/, slurm/ and runs/,

then the folders left empty, and nothing else: other files in the folder stay; a listed path
that leads out of the folder (absolute, or through ..) is refused; a symbolic link is removed as a
link, never followed. A manifest.json that lists no files (another program's, or a site run of
an older version) is refused even with --overwrite: which files are the run's is not known.
"""
from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

from model.errors import InputError, strict_json
from model.outputs import write_json

MANIFEST = "manifest.json"
OWN_SUBFOLDERS = ("nodes", "slurm", "runs")


def previous_run(folder: Path | str, flag: str = "--output_dir") -> list[Path]:
    """The files of the run that last wrote `folder` (none when it is missing or holds none),
    each inside it; InputError when its manifest does not say which they are."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found: set[Path] = set()
    manifest = folder / MANIFEST
    if manifest.is_file() or manifest.is_symlink():
        found |= {folder / name for name in _listed_files(manifest, flag)} | {manifest}
    for name in OWN_SUBFOLDERS:
        found |= set(_everything_under(folder / name))
    return sorted(path for path in found if path.is_symlink() or path.exists())


def clear_previous_run(folder: Path | str, overwrite: bool, flag: str = "--output_dir") -> list[Path]:
    """Refuse `folder` when it holds another run's files, or with `overwrite` remove them (and
    the folders that leaves empty); the files removed."""
    folder = Path(folder)
    files = previous_run(folder, flag)
    if files and not overwrite:
        shown = ", ".join(str(p.relative_to(folder)) for p in files[:3]) + (", ..." if len(files) > 3 else "")
        raise InputError(f"{flag} {folder}: holds another run's files ({len(files)}: {shown}); add --overwrite "
                         "to replace them or choose another folder")
    for path in files:
        path.unlink(missing_ok=True)          # a link goes, never what it points to
    for parent in sorted({p.parent for p in files}, key=lambda p: len(p.parts), reverse=True):
        while parent != folder and folder in parent.parents:
            try:
                parent.rmdir()                # only an empty folder
            except OSError:
                break
            parent = parent.parent
    return files


def run_files(staging: Path) -> list[str]:
    """The files a run wrote into its staging folder (model/outputs.py staged_folder), plus the
    manifest written last, as the manifest lists them: relative, sorted."""
    written = {p.relative_to(staging).as_posix() for p in Path(staging).rglob("*") if p.is_file()}
    return sorted(written | {MANIFEST})


def write_manifest(staging: Path, manifest: dict) -> None:
    """manifest.json, last of a run's files, listing them under "files" (what --overwrite removes)."""
    write_json(Path(staging) / MANIFEST, manifest | {"files": run_files(staging)})


def _listed_files(manifest: Path, flag: str) -> list[str]:
    try:
        record = strict_json(manifest.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        record = None
    files = record.get("files") if isinstance(record, dict) else None
    if not (isinstance(files, list) and all(isinstance(name, str) and name for name in files)):
        raise InputError(f"{flag} {manifest.parent}: its {MANIFEST} lists no files (another program's, or a run of "
                         "an older version); empty the folder yourself or choose another")
    for name in files:
        if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
            raise InputError(f"{flag} {manifest.parent}: its {MANIFEST} lists {name!r}, outside the folder; "
                             "empty the folder yourself or choose another")
    return files


def _everything_under(subfolder: Path) -> list[Path]:
    """Every file and link below `subfolder` (itself, when it is a link or a file), never
    following a link."""
    if subfolder.is_symlink() or subfolder.is_file():
        return [subfolder]
    found = []
    for root, dirs, files in os.walk(subfolder, followlinks=False):
        found += [Path(root) / name for name in files]
        found += [Path(root) / name for name in dirs if (Path(root) / name).is_symlink()]
    return found
