#!/usr/bin/python3
"""Run a command, optionally inside a new memory cgroup, and sample its memory and I/O.

usage: monitor.py [--limit BYTES] [--interval S] [--tsv FILE] [--journal FILE]
                  [--events FILE] [--cgroup-name NAME] -- CMD...

Every interval (default 0.2 s) it records, for the newest process of the command's tree
(the command itself, or the program that /usr/bin/time runs): /proc/PID/io read_bytes and
write_bytes, /proc/PID/status VmRSS, RssAnon and RssFile, /proc/PID/stat CPU time and
block I/O delay (delayacct_blkio_ticks, which needs kernel.task_delayacct=1), and with
--limit the cgroup's charged memory. With --journal it also polls a merge journal every
50 ms and writes to --events the time at which each tensor record appeared. At exit it
prints one "key value" line per measurement. With --limit the
command runs in a child of this process's own memory cgroup (v1 or v2, created as root
and removed afterwards) whose limit is BYTES, so page cache counts against the limit as it
would on a machine with that much memory.
"""
import argparse
import os
import signal
import subprocess
import sys
import time


def own_cgroup():
    """Return (version, directory) of this process's memory cgroup."""
    with open("/proc/self/cgroup") as fh:
        lines = [line.rstrip("\n").split(":", 2) for line in fh]
    for _, controllers, path in lines:
        if "memory" in controllers.split(","):
            return 1, "/sys/fs/cgroup/memory" + path
    for hid, controllers, path in lines:
        if hid == "0" and controllers == "":
            return 2, "/sys/fs/cgroup" + path
    raise SystemExit("monitor.py: no memory cgroup found in /proc/self/cgroup")


class Cgroup:
    def __init__(self, name, limit):
        self.version, parent = own_cgroup()
        self.path = os.path.join(parent, name)
        if os.path.isdir(self.path):
            os.rmdir(self.path)
        os.mkdir(self.path)
        limit_file = "memory.limit_in_bytes" if self.version == 1 else "memory.max"
        self.write(limit_file, str(limit))
        if self.version == 1:
            # Without swap accounting the memsw file may be missing; the limit above holds.
            try:
                self.write("memory.memsw.limit_in_bytes", str(limit))
            except OSError:
                pass

    def write(self, name, value):
        with open(os.path.join(self.path, name), "w") as fh:
            fh.write(value)

    def read(self, name):
        with open(os.path.join(self.path, name)) as fh:
            return fh.read()

    def usage(self):
        return int(self.read("memory.usage_in_bytes" if self.version == 1 else "memory.current"))

    def peak(self):
        return int(self.read("memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"))

    def stat(self):
        return dict((k, int(v)) for k, v in (line.split() for line in self.read("memory.stat").splitlines()))

    def oom_kills(self):
        if self.version == 1:
            return int(self.stat_line("memory.oom_control", "oom_kill"))
        return int(self.stat_line("memory.events", "oom_kill"))

    def stat_line(self, name, key):
        for line in self.read(name).splitlines():
            k, v = line.split()
            if k == key:
                return v
        return 0

    def enter(self):
        self.write("cgroup.procs", "0")

    def remove(self):
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.1)


def newest_descendant(pid):
    """Follow the first child at each level: /usr/bin/time CMD is followed down to CMD."""
    while True:
        try:
            with open("/proc/%d/task/%d/children" % (pid, pid)) as fh:
                children = fh.read().split()
        except OSError:
            return pid
        if not children:
            return pid
        pid = int(children[-1])


def read_fields(path, keys):
    out = {}
    try:
        with open(path) as fh:
            for line in fh:
                k, _, v = line.partition(":")
                if k in keys:
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def stat_times(pid):
    """Return (utime + stime, delayacct_blkio_ticks, run-queue wait) of pid in seconds.

    The run-queue wait (second field of /proc/PID/schedstat) is time spent runnable but
    not running: on a busy machine it separates waiting for a CPU from waiting for I/O.
    """
    try:
        with open("/proc/%d/stat" % pid) as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        with open("/proc/%d/schedstat" % pid) as fh:
            run_queue_ns = int(fh.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    # fields[0] is field 3 (state): utime is field 14, stime 15, blkio ticks 42.
    return ((int(fields[11]) + int(fields[12])) / tick, int(fields[39]) / tick,
            run_queue_ns / 1e9)


class JournalWatch:
    """Reads the records appended to a merge journal (layout in src/journal.c)."""

    def __init__(self, path):
        self.path, self.offset, self.events, self.bytes = path, 0, [], 0

    def poll(self, now):
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return
        pos = 0
        while len(data) - pos >= 32:
            # "SYJ2" records carry the sample hash after the tensor hash; "SYJ1" do not.
            fixed = 40 if data[pos:pos + 4] == b"SYJ2" else 32
            name_len = int.from_bytes(data[pos + 4:pos + 8], "little")
            length = int.from_bytes(data[pos + 16:pos + 24], "little")
            end = pos + fixed + name_len + 8
            if end > len(data):
                break
            name = data[pos + fixed:pos + fixed + name_len].decode("utf-8", "replace")
            self.events.append((now, name, length))
            self.bytes += length
            pos = end
        self.offset += pos


def take_sample(pid, cg, now):
    io = read_fields("/proc/%d/io" % pid, ("read_bytes", "write_bytes", "rchar", "wchar"))
    st = read_fields("/proc/%d/status" % pid, ("VmRSS", "RssAnon", "RssFile"))
    times = stat_times(pid)
    if not io or not st:
        return None
    cgroup_bytes = cg.usage() if cg else 0
    row = (now, io.get("rchar", 0), io.get("read_bytes", 0), io.get("write_bytes", 0),
           st.get("VmRSS", 0), st.get("RssAnon", 0), st.get("RssFile", 0), cgroup_bytes >> 10)
    return row, times, st


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0, help="memory cgroup limit in bytes")
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument("--tsv", default=None, help="write the samples here")
    ap.add_argument("--cgroup-name", default="symphony-bench")
    ap.add_argument("--journal", default=None, help="merge journal to watch")
    ap.add_argument("--events", default=None, help="write journal events here")
    ap.add_argument("--kill-at-bytes", type=int, default=0,
                    help="SIGKILL the command once the journal records this many bytes")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    if not cmd:
        ap.error("no command given")

    cg = Cgroup(args.cgroup_name, args.limit) if args.limit > 0 else None
    start = time.monotonic()
    proc = subprocess.Popen(cmd, preexec_fn=cg.enter if cg else None)
    rows = []
    peak = {"RssAnon": 0, "VmRSS": 0, "RssFile": 0}
    watch = JournalWatch(args.journal) if args.journal else None
    times = None
    next_sample = 0.0
    killed = False
    while proc.poll() is None:
        now = time.monotonic() - start
        if watch:
            watch.poll(now)
            if args.kill_at_bytes and watch.bytes >= args.kill_at_bytes and not killed:
                os.kill(newest_descendant(proc.pid), signal.SIGKILL)
                killed = True
                print("killed_at_seconds %.2f" % now)
                print("killed_at_bytes %d" % watch.bytes)
        if now >= next_sample:
            next_sample = now + args.interval
            pid = newest_descendant(proc.pid)
            sample = take_sample(pid, cg, now)
            if sample:
                rows.append(sample[0])
                times = sample[1] or times
                for k in peak:
                    peak[k] = max(peak[k], sample[2].get(k, 0))
        time.sleep(0.05 if watch else args.interval)
    wall = time.monotonic() - start
    if args.tsv:
        with open(args.tsv, "w") as fh:
            fh.write("# seconds rchar read_bytes write_bytes rss_kib anon_kib file_kib "
                     "cgroup_kib\n")
            for r in rows:
                fh.write("%.2f %d %d %d %d %d %d %d\n" % r)
    print("exit_status %d" % proc.returncode)
    print("wall_seconds %.2f" % wall)
    print("samples %d" % len(rows))
    if times:
        # From the last sample, up to one interval before the end.
        print("cpu_seconds %.2f" % times[0])
        print("blkio_delay_seconds %.2f" % times[1])
        print("run_queue_wait_seconds %.2f" % times[2])
    with open("/proc/loadavg") as fh:
        print("load_average_1min %s" % fh.read().split()[0])
    if watch:
        watch.poll(wall)
        if args.events:
            with open(args.events, "w") as fh:
                for t, name, length in watch.events:
                    fh.write("%.3f %s %d\n" % (t, name, length))
        print("journal_records %d" % len(watch.events))
    print("peak_anon_kib %d" % peak["RssAnon"])
    print("peak_rss_kib %d" % peak["VmRSS"])
    print("peak_file_kib %d" % peak["RssFile"])
    if cg:
        print("cgroup_version %d" % cg.version)
        print("cgroup_limit_kib %d" % (args.limit >> 10))
        print("cgroup_peak_kib %d" % (cg.peak() >> 10))
        print("cgroup_oom_kills %s" % cg.oom_kills())
        cg.remove()
    sys.stdout.flush()
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
