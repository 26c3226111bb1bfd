"""The one rule for reusing a site's output folder (model.facility --output_dir).

A run records in its manifest.json, under "files", every file it wrote into the folder (paths
relative to it). A folder holds another run's files when it has a manifest.json, or one of the
command's own working subfolders (a site run's nodes/ of --save_nodes and slurm/ of --launcher
slurm, a --scenario sweep's runs/), which a failed run may leave behind. A run refuses such a
folder before any work, and touches nothing in it, unless --overwrite. With --overwrite the
previous run's files are

  - the files its manifest.json lists, and the manifest itself: removed only when the new run's
    files are written and about to take their place, so a run that fails or is refused later
    (--strict, Ctrl-C, failed Slurm tasks) leaves the previous results as they were;
  - everything under the working subfolders: removed before the run when it writes into that
    subfolder itself (their contents would mix with the new run's), else with the files above;

then the folders left empty, and nothing else: other files in the folder stay. A working
subfolder that holds names the command never writes (a user's own runs/, say) is refused even
with --overwrite; so is a listed path that leads out of the folder (absolute, or through ..),
and a manifest.json that lists no files (another program's, or a site run of an older
version): which files are the run's is not known. A file the run would write over that no
previous run's manifest lists (someone's own report.html) is refused when the run's files are
ready, and kept. A symbolic link is removed as a link.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path, PurePosixPath

from model.errors import InputError, strict_json
from model.outputs import write_json

MANIFEST = "manifest.json"
# Each working subfolder, with what a run of this command writes directly in it: anything under a
# name that does not match is not ours.
SITE_SUBFOLDERS = {"nodes": re.compile(r"node_\d+\.npz"), "slurm": re.compile(r".+")}
SWEEP_SUBFOLDERS = {"runs": re.compile(r"s\d+_seed\d+")}


def previous_run(folder: Path | str, subfolders: dict, flag: str = "--output_dir") -> list[Path]:
    """The files of the run that last wrote `folder` (none when it is missing or holds none),
    each inside it; InputError when its manifest does not say which they are, or a working
    subfolder holds what no run of the command writes."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found: set[Path] = set()
    manifest = folder / MANIFEST
    if manifest.is_file() or manifest.is_symlink():
        found |= {folder / name for name in _listed_files(manifest, flag)} | {manifest}
    for name, pattern in subfolders.items():
        sub = folder / name
        if sub.is_dir() and not sub.is_symlink():
            foreign = sorted(p.name for p in sub.iterdir() if not pattern.fullmatch(p.name))
            if foreign:
                raise InputError(f"{flag} {folder}: its {name}/ holds {foreign[0]!r}, which no run of this command "
                                 "writes; choose another folder")
        found |= set(_everything_under(sub))
    return sorted(path for path in found if path.is_symlink() or path.exists())


def check_previous_run(folder: Path | str, overwrite: bool, subfolders: dict,
                       flag: str = "--output_dir") -> list[Path]:
    """Refuse `folder` when it holds another run's files, unless `overwrite`: then those files
    (for remove_files, when the caller is ready)."""
    folder = Path(folder)
    files = previous_run(folder, subfolders, flag)
    if files and not overwrite:
        shown = ", ".join(str(p.relative_to(folder)) for p in files[:3]) + (", ..." if len(files) > 3 else "")
        raise InputError(f"{flag} {folder}: holds another run's files ({len(files)}: {shown}); add --overwrite "
                         "to replace them or choose another folder")
    return files


def remove_files(folder: Path | str, files: list[Path]) -> None:
    """Remove `files` (links as links) and the folders inside `folder` that this leaves empty."""
    folder = Path(folder)
    for path in files:
        path.unlink(missing_ok=True)          # a link goes, never what it points to
    for parent in sorted({p.parent for p in files}, key=lambda p: len(p.parts), reverse=True):
        while parent != folder and folder in parent.parents:
            try:
                parent.rmdir()                # only an empty folder
            except OSError:
                break
            parent = parent.parent


def under(files: list[Path], folder: Path | str, names) -> tuple[list[Path], list[Path]]:
    """`files` split into those under one of `folder`'s subfolders `names`, and the rest."""
    roots = [Path(folder) / name for name in names]
    inside = [p for p in files if any(p == r or r in p.parents for r in roots)]
    return inside, [p for p in files if p not in inside]


def refuse_foreign(folder: Path | str, staging: Path | str, previous: list[Path], flag: str = "--output_dir") -> None:
    """InputError when a file the run staged would replace one in `folder` that is not a
    previous run's (`previous`): someone else's file of the same name, e.g. a report.html of
    their own in a folder no manifest speaks for. Called before the staged files move in."""
    folder, staging, ours = Path(folder), Path(staging), set(previous)
    for source in sorted(Path(staging).rglob("*")):
        target = folder / source.relative_to(staging)
        if source.is_file() and (target.exists() or target.is_symlink()) and target not in ours:
            raise InputError(f"{flag} {folder}: holds {target.relative_to(folder)}, which this run would replace "
                             "and no previous run's manifest lists; move it or choose another folder")


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
