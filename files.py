"""The one way this project writes and reads its own files: a temporary file beside the destination renamed in (a
crash, a full disk or Ctrl-C leave the previous file whole), every failure a FileError naming the path and the fix."""
import atexit
import contextlib
import errno
import glob
import hashlib
import json
import math
import os
import shutil
import socket


class FileError(ValueError):
    """A file or folder the script cannot use: the message is the one line the user sees."""


WHY = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up", errno.EROFS: "read-only",
       errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.EISDIR: "it is a folder",
       errno.ENOTDIR: "a part of the path is a file", errno.ENAMETOOLONG: "the name is too long"}
os_error = lambda path, e, what='write': FileError(f"cannot {what} {path} ({WHY.get(e.errno, e.strerror or e)}): "
                                                   "free space or choose a writable place, then run again")
_finite = lambda v: ({k: _finite(x) for k, x in v.items()} if isinstance(v, dict) else list(map(_finite, v))
                     if isinstance(v, (list, tuple)) else str(v) if isinstance(v, float) and not math.isfinite(v)
                     else v)  # inf and nan as strings: strict JSON has neither
write_json = lambda path, obj: write(path, lambda f: json.dump(_finite(obj), f, indent=1), binary=False)
write_text = lambda path, text: write(path, lambda f: f.write(text), binary=False)
remove = lambda path: (shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path)
                       else os.remove(path) if os.path.lexists(path) else None)


def write(path, writer, binary=True):
    """writer(f) fills a temporary file beside path, which is then fsynced and renamed over path."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, 'wb' if binary else 'w', encoding=None if binary else 'utf-8') as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise os_error(path, e) from None
    except Exception as e:  # an error raised while Ctrl-C unwound the writer (torch.save's zip file) is that Ctrl-C
        raise KeyboardInterrupt if isinstance(e.__context__, KeyboardInterrupt) else e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_json(path, fields=(), what='file'):
    """A JSON object with the given fields, or a FileError naming the file and the damage."""
    try:
        with open(path, encoding='utf-8') as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise FileError(f"{path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FileError(f"{path} is damaged ({getattr(e, 'msg', e)}): not a readable {what}") from None
    except OSError as e:
        raise os_error(path, e, 'read') from None
    if missing := [k for k in fields if not isinstance(obj, dict) or k not in obj]:
        raise FileError(f"{path} lacks {', '.join(missing)}: not a {what} this codebase wrote")
    return obj


def read_jsonl(path):
    """The records (objects with an integer 'iter') of a metrics.jsonl, [] if none; a torn last line is left out."""
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().split('\n')
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise FileError(f"cannot read {path} ({e}): not a metrics file") from None
    records = []
    for n, line in enumerate(lines, 1):
        with contextlib.suppress(json.JSONDecodeError):
            if isinstance(r := json.loads(line), dict) and isinstance(r.get('iter'), int):
                records.append(r)
                continue
        if line.strip() and n < len(lines):  # only the last line, still without its newline, may be torn
            raise FileError(f"{path}:{n} is not a metrics record: the file is damaged; remove that line")
    return records


def append_jsonl(path, record):
    """Append one record as a line; a torn last line left by a crash is cut off first, never merged with it."""
    try:
        with open(path, 'a+b') as f:  # appends go to the end whatever the position
            f.seek(max(0, f.seek(0, os.SEEK_END) - 1))
            if f.read(1) not in (b'', b'\n'):  # torn (rare): read it all back to the last newline, however far
                f.seek(0)
                f.truncate(f.read().rfind(b'\n') + 1)
            f.write((json.dumps(_finite(record)) + '\n').encode())
    except OSError as e:
        raise os_error(path, e) from None


def checksum(obj):
    """sha256 over every tensor's bytes and every other leaf's repr, in key order: ckpt.pt carries it, so that a
    checkpoint whose bytes were damaged is refused instead of resumed."""
    import torch
    h = hashlib.sha256()

    def visit(v):
        if isinstance(v, dict):  # each key (its repr), then its value
            visit([(k, v[k]) for k in sorted(v, key=str)])
        elif isinstance(v, (list, tuple)):
            list(map(visit, v))
        elif isinstance(v, torch.Tensor):
            h.update(f'{v.dtype}{tuple(v.shape)}'.encode())
            h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        else:
            h.update(repr(v).encode())
    visit(obj)
    return h.hexdigest()


def check_dest(path):
    """Why path could not be written (the nearest existing folder above it is a file, or not writable), or None."""
    p = os.path.abspath(path)
    while not os.path.exists(p):
        p = os.path.dirname(p)
    if not os.path.isdir(p):
        return f"cannot write {path}: {p} is a file, not a folder; choose another place"
    if not os.access(p, os.W_OK):
        return f"cannot write {path}: {p} is read-only or not writable; choose a writable place"


def claim(folder):
    """Make this process folder's owner (None) or say why not. The lock is made atomically (O_EXCL), a stale one taken
    over; at exit it goes, and the folder too if we made it and left it empty."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        return f"{folder} is a file, not a folder: choose another out_dir"
    lock, made = os.path.join(folder, 'train.lock'), not os.path.exists(folder)
    try:
        os.makedirs(folder, exist_ok=True)
        if os.path.isfile(lock) and not lock_holder(lock):  # stale: its process is gone, killed mid-write maybe
            dead = open(lock).read().split()[:1] or ['']        # (a SIGKILL skips cleanup): its temp files go too
            for tmp in glob.glob(os.path.join(glob.escape(folder), '**', f'*.tmp{dead[0]}'), recursive=True):
                os.remove(tmp)
            os.remove(lock)
        with os.fdopen(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL), 'w') as f:
            f.write(f"{os.getpid()} {socket.gethostname()}\n")
    except FileExistsError:
        holder = lock_holder(lock)
        return (f"{folder} is in use by pid {holder} ({lock}): wait for it or choose another out_dir" if holder else
                f"{lock} is not a lock file: remove it or choose another out_dir" if not os.path.isfile(lock) else
                f"{folder}: another run took its lock at the same moment; choose another out_dir")
    except OSError as e:
        return str(os_error(folder, e))

    @atexit.register
    def release():  # the lock only while it is ours (a run that found it stale may have taken it over)
        with contextlib.suppress(OSError):
            if lock_holder(lock) == str(os.getpid()):
                os.remove(lock)
            if made and not os.listdir(folder):
                os.rmdir(folder)


def lock_holder(lock):
    """'pid on host' of the process holding a lock file if it may still run; None for a stale or unreadable one."""
    try:
        with open(lock) as f:
            pid, host = f.read().split()[:2]
        pid = int(pid)
    except (OSError, ValueError):
        return None
    if host != socket.gethostname():
        return f"{pid} on {host}"  # cannot tell from here: assume it runs
    try:
        os.kill(pid, 0)
        with open(f'/proc/{pid}/stat') as f:  # a zombie has exited
            return None if f.read().rsplit(')', 1)[1].split()[0] == 'Z' else str(pid)
    except ProcessLookupError:
        return None
    except (OSError, IndexError):
        return str(pid)  # another user's, or no /proc to ask: assume it runs
