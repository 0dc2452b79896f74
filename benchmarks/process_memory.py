"""The memory of a command's processes while it runs, sampled from /proc: what each holds of its own, what it
maps from files, and how much of a folder's files they hold between them, each page counted once."""

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

INTERVAL_S = 0.1  # between two samples of each process's status
SMAPS_EVERY = 5  # samples between two reads of the mappings (each costs a walk over the process's pages)


@dataclass
class Peaks:
    """The peaks, in bytes, of one process."""

    anonymous: int = 0  # RssAnon: memory of its own (heap, tensors it made), shared with no other process
    file_backed: int = 0  # RssFile: pages of mapped files (libraries; a memory-mapped cache), which processes share
    of_folder: int = 0  # the pages of the folder's files it maps (Rss), shared or not


@dataclass(frozen=True)
class Sampled:
    """What `run_sampled` saw: the peaks of the command's own process, and of each of its processes that mapped a
    file of the folder, and the peak of the folder's pages that these held between them, each page counted once
    (the sum of their Pss: a page that two processes share counts half in each)."""

    main: Peaks
    processes: list[Peaks]
    folder_once: int
    seconds: float  # from start to end
    output: str  # what the command printed on stdout


def run_sampled(command: list[str], *, cwd: Path, env: dict[str, str], folder: Path) -> Sampled:
    """Run `command` to its end (an error if it fails), sampling its processes and their descendants."""
    peaks: dict[int, Peaks] = {}
    mapping: set[int] = set()  # the processes seen to map a file of `folder`
    folder_once = 0
    start = time.perf_counter()
    with tempfile.TemporaryFile() as output, tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=errors)
        sample = 0
        while process.poll() is None:
            pss_sum = 0
            for pid in _family(process.pid):
                status = _status(pid)
                if status is None:
                    continue
                usage = peaks.setdefault(pid, Peaks())
                usage.anonymous = max(usage.anonymous, status["RssAnon"])
                usage.file_backed = max(usage.file_backed, status["RssFile"])
                if sample % SMAPS_EVERY == 0:
                    rss, pss = _folder_pages(pid, folder)
                    if rss:
                        mapping.add(pid)
                        usage.of_folder = max(usage.of_folder, rss)
                        pss_sum += pss
            folder_once = max(folder_once, pss_sum)
            sample += 1
            time.sleep(INTERVAL_S)
        seconds = time.perf_counter() - start
        if process.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}:\n{errors.read().decode()}")
        output.seek(0)
        printed = output.read().decode()
    main = peaks.get(process.pid, Peaks())
    return Sampled(main, [peaks[pid] for pid in sorted(mapping)], folder_once, seconds, printed)


def _family(root: int) -> list[int]:
    """`root` and its descendants, as /proc lists them now."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # The parent is the fourth field, after the name in parentheses (which may hold spaces).
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    family: list[int] = []
    pending = [root]
    while pending:
        pid = pending.pop()
        family.append(pid)
        pending.extend(children.get(pid, []))
    return family


def _status(pid: int) -> dict[str, int] | None:
    """The memory lines of /proc/PID/status, in bytes; None if the process has ended."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    values = {key: value.split() for key, value in (line.split(":", 1) for line in lines if ":" in line)}
    if "RssAnon" not in values:  # a zombie: its memory is gone
        return None
    return {key: int(values[key][0]) * 1024 for key in ("RssAnon", "RssFile")}


def _folder_pages(pid: int, folder: Path) -> tuple[int, int]:
    """The resident pages (Rss) and the proportional share (Pss) of the files of `folder` that `pid` maps."""
    rss = pss = 0
    inside = False
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return 0, 0
    prefix = f"{folder.resolve()}{os.sep}"
    for line in lines:
        fields = line.split()
        if fields and not fields[0].endswith(":"):  # the header of a mapping: address, ..., path
            inside = len(fields) >= 6 and fields[5].startswith(prefix)
        elif inside and fields[0] == "Rss:":
            rss += int(fields[1]) * 1024
        elif inside and fields[0] == "Pss:":
            pss += int(fields[1]) * 1024
    return rss, pss
