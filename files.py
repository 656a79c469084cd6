"""
The one way this project writes and reads its own files (checkpoints, metrics, records, datasets, exports).
Writes go to a temporary file beside the destination and are renamed in, so a crash, a full disk or Ctrl-C leaves
the previous file whole; every OS failure becomes a FileError whose message names the path and what to do.
Reads name the file and say what is wrong with it.
"""
import errno
import json
import math
import os
import shutil


class FileError(ValueError):
    """A file or folder the script cannot use: the message is the one line the user sees."""


WHY = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up", errno.EROFS: "read-only",
       errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.EISDIR: "it is a folder",
       errno.ENOTDIR: "a part of the path is a file", errno.ENAMETOOLONG: "the name is too long"}


def os_error(path, e, what='write'):
    why = WHY.get(e.errno, e.strerror or str(e))
    return FileError(f"cannot {what} {path} ({why}): free space or choose a writable place, then run again")


def write(path, writer, binary=True):
    """writer(f) fills a temporary file beside path, which is then fsynced and renamed over path."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, 'wb' if binary else 'w', **({} if binary else dict(encoding='utf-8'))) as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise os_error(path, e) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _finite(v):
    """inf and nan as strings: strict JSON has neither."""
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return str(v) if isinstance(v, float) and not math.isfinite(v) else v


def write_json(path, obj):
    write(path, lambda f: json.dump(_finite(obj), f, indent=1), binary=False)


def write_text(path, text):
    write(path, lambda f: f.write(text), binary=False)


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
    missing = [k for k in fields if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise FileError(f"{path} lacks {', '.join(missing)}: not a {what} this codebase wrote")
    return obj


def read_jsonl(path):
    """The records (JSON objects with an integer 'iter') of a metrics.jsonl; a torn last line (a crash mid-write) is
    left out, a damaged line elsewhere is an error."""
    if not os.path.exists(path):
        return []
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().split('\n')
    except (OSError, UnicodeDecodeError) as e:
        raise FileError(f"cannot read {path} ({e}): not a metrics file") from None
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            ok = isinstance(r, dict) and isinstance(r.get('iter'), int)
        except json.JSONDecodeError:
            ok = False
        if not ok:
            if n == len(lines):  # the last line, without its newline: torn by a crash
                continue
            raise FileError(f"{path}:{n} is not a metrics record: the file is damaged; remove that line")
        records.append(r)
    return records


def append_jsonl(path, record):
    """Append one record as a line; a torn last line left by a crash is cut off first, never merged with it."""
    try:
        with open(path, 'a+b') as f:
            size = f.seek(0, os.SEEK_END)
            if size:
                f.seek(max(0, size - 65536))
                tail = f.read()
                if not tail.endswith(b'\n'):
                    cut = tail.rfind(b'\n')
                    f.truncate(size - len(tail) + cut + 1 if cut >= 0 else 0)
            f.write((json.dumps(_finite(record)) + '\n').encode())
    except OSError as e:
        raise os_error(path, e) from None


def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def checksum(obj):
    """sha256 over every tensor's bytes and every other leaf's repr, in key order: what ckpt.pt carries, so that a
    checkpoint whose bytes were damaged is refused instead of resumed."""
    import hashlib
    import torch
    h = hashlib.sha256()

    def visit(v):
        if isinstance(v, dict):
            for k in sorted(v, key=str):
                h.update(repr(k).encode())
                visit(v[k])
        elif isinstance(v, (list, tuple)):
            for x in v:
                visit(x)
        elif isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            h.update(f'{t.dtype}{tuple(t.shape)}'.encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(v).encode())
    visit(obj)
    return h.hexdigest()


def check_dest(path):
    """Before the work: one line if path could not be written, the nearest existing folder above it being a file
    or not writable (a read-only file system, missing permission); None if it can."""
    p = os.path.abspath(path)
    while not os.path.exists(p):
        p = os.path.dirname(p)
    if not os.path.isdir(p):
        return f"cannot write {path}: {p} is a file, not a folder; choose another place"
    if not os.access(p, os.W_OK):
        return f"cannot write {path}: {p} is read-only or not writable; choose a writable place"
    return None


def claim(folder):
    """Make this process the owner of folder, before anything is written into it: the lock file is created
    atomically (O_EXCL), so of two runs started at once exactly one gets it. A lock whose process is gone (same
    host) is taken over. At exit the lock goes, and the folder too if this process made it and left it empty.
    Returns None, or the one line saying why the folder cannot be taken."""
    import atexit
    import socket
    if os.path.exists(folder) and not os.path.isdir(folder):
        return f"{folder} is a file, not a folder: choose another out_dir"
    lock, made, me = os.path.join(folder, 'train.lock'), not os.path.exists(folder), f"{os.getpid()} {socket.gethostname()}"
    for _ in range(2):
        try:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            break
        except FileExistsError:
            holder = lock_holder(lock)
            if holder or not os.path.isfile(lock):
                return (f"{folder} is in use by pid {holder} ({lock}): wait for it or choose another out_dir" if holder
                        else f"{lock} is not a lock file: remove it or choose another out_dir")
            os.remove(lock)  # stale: its process is gone
        except OSError as e:
            return str(os_error(folder, e))
    else:
        return f"{folder}: another run took its lock at the same moment; choose another out_dir"
    with os.fdopen(fd, 'w') as f:
        f.write(me + '\n')

    def release():
        try:
            with open(lock) as f:
                if f.read().strip() == me:
                    os.remove(lock)
            if made and not os.listdir(folder):
                os.rmdir(folder)
        except OSError:
            pass
    atexit.register(release)
    return None


def lock_holder(lock):
    """'pid on host' of the process holding a lock file if it may still run; None for a stale or unreadable one."""
    import socket
    try:
        with open(lock) as f:
            pid, host = f.read().split()[:2]
        pid = int(pid)
    except (OSError, ValueError):
        return None
    if host != socket.gethostname():
        return f"{pid} on {host}"  # cannot tell from here: assume it runs
    try:
        with open(f'/proc/{pid}/stat') as f:
            return None if f.read().rsplit(')', 1)[1].split()[0] == 'Z' else str(pid)  # a zombie has exited
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return str(pid)
        except ProcessLookupError:
            return None
        except OSError:
            return str(pid)
