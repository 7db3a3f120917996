"""owl vs llama.cpp, side by side: same model, prompt lengths, thread count; interleaved.

Started by bench/compare/run.sh (which builds the llama-cpp-python venv first); run
`bench/compare/run.sh --help` for the options. For each model x thread count and for
each repetition it runs, one process each and in this order:

    owl bench (1 rep)  ->  llama.cpp bench (1 rep)  ->  owl first token  ->  llama.cpp first token

so slow drift of the machine (other jobs, thermal state) hits both tools alike. Every
process does its own untimed warm-up per test, as llama-bench does. Reported per metric:
the mean and sample standard deviation over repetitions, and owl / llama.cpp.

Metrics:
  ppN tok/s   prompt processing of N tokens from an empty KV cache (llama-bench ppN)
  tgN tok/s   N single-token decodes from an empty KV cache (llama-bench tgN)
  peak RSS    high-water resident set of the bench process (owl: the whole process, from
              wait4; llama.cpp: VmHWM minus the Python interpreter's own VmRSS measured
              before the model is loaded, so numpy and the interpreter are not charged)
  load->first token
              owl: wall time from spawning `owl generate MODEL PROMPT -n 1` to its exit
              (includes exec and exit: an upper bound); llama.cpp: from the start of
              llama_model_load_from_file to the greedy first token, in-process (Python
              start-up and imports, reported separately, are not counted)
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "llama_worker.py")
LLAMA_CPP_COMMIT = "0c1e57098"  # vendored by llama-cpp-python 0.3.36 (its CHANGELOG)
FIRST_TOKEN_PROMPT = "The capital of France is"
DEMO_MODELS = ["smollm2", "gemma3", "qwen2.5-coder"]


# ---------------------------------------------------------------- processes


def run_measured(cmd, timeout):
    """Runs `cmd`; returns (rc, stdout, stderr, wall_s, t_spawn, peak_rss_kib of that child)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t_spawn = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        # A blocking wait4 (not polling) so the wall time ends when the child does.
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        wall = time.monotonic() - t_spawn
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (proc.returncode, out.read().decode("utf-8", "replace"),
                err.read().decode("utf-8", "replace"), wall, t_spawn, usage.ru_maxrss)


def has_flag(help_text, flag):
    """Whether `--help` output documents exactly `flag` (not just a longer flag it prefixes)."""
    return re.search(r"(?<![\w-])" + re.escape(flag) + r"(?![\w-])", help_text) is not None


def last_line(text):
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def parse_json_out(stdout):
    """The JSON document a tool printed: the whole stdout, else its last JSON-looking line."""
    try:
        return json.loads(stdout)
    except ValueError:
        for line in reversed(stdout.strip().splitlines()):
            line = line.strip()
            if line[:1] in "[{":
                try:
                    return json.loads(line)
                except ValueError:
                    continue
    raise ValueError("no JSON in output: " + last_line(stdout))


# ---------------------------------------------------------------- the two tools


class Owl:
    def __init__(self, binary):
        self.binary = binary
        self.has_bench, self.bench_help = self._help("bench")
        self.has_generate, self.generate_help = self._help("generate")

    def _help(self, sub):
        try:
            r = subprocess.run([self.binary, sub, "--help"], capture_output=True, text=True,
                               timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return False, str(e)
        return r.returncode == 0, r.stdout + r.stderr

    def bench(self, model, threads, n_prompt, n_gen, depths, timeout, extra):
        cmd = [self.binary, "bench", model, "-p", ",".join(map(str, n_prompt)),
               "-n", ",".join(map(str, n_gen)), "-r", "1", "-t", str(threads), "--json"]
        if depths != [0]:
            cmd += ["-d", ",".join(map(str, depths))]
        for flag in ("--ctx-size", "--ctx"):
            if has_flag(self.bench_help, flag):
                cmd += [flag, str(max(n_prompt + n_gen) + max(depths))]
                break
        rc, out, err, wall, _, rss = run_measured(cmd + extra, timeout)
        if rc != 0:
            raise RuntimeError(f"owl bench exited {rc}: {last_line(err or out)}")
        speeds = {}
        for row in parse_json_out(out):
            speeds[row["test"]] = float(row["tokens_per_s"])
        return speeds, rss

    def first_token(self, model, threads, ctx, timeout, extra):
        cmd = [self.binary, "generate", model, FIRST_TOKEN_PROMPT, "-n", "1",
               "--temperature", "0", "-t", str(threads)]
        for flag in ("--ctx-size", "--ctx"):
            if has_flag(self.generate_help, flag):
                cmd += [flag, str(ctx)]
                break
        rc, out, err, wall, _, _ = run_measured(cmd + extra, timeout)
        if rc != 0:
            raise RuntimeError(f"owl generate exited {rc}: {last_line(err or out)}")
        return {"load_to_first_token_ms": wall * 1e3, "startup_ms": 0.0}


class LlamaCpp:
    def __init__(self, python, flash_attn):
        self.python = python
        self.flash_attn = flash_attn
        self.info = {}

    def _worker(self, args, timeout):
        cmd = [self.python, WORKER] + args + ["--flash-attn", self.flash_attn]
        rc, out, err, wall, t_spawn, _ = run_measured(cmd, timeout)
        if rc != 0:
            raise RuntimeError(f"llama.cpp worker exited {rc}: {last_line(err or out)}")
        doc = parse_json_out(out)
        self.info = {"llama_cpp_python": doc.get("llama_cpp_python"),
                     "system_info": doc.get("system_info")}
        return doc, t_spawn

    def bench(self, model, threads, n_prompt, n_gen, depths, timeout):
        doc, _ = self._worker(["bench", "--model", model, "--threads", str(threads),
                               "-p", ",".join(map(str, n_prompt)),
                               "-n", ",".join(map(str, n_gen)),
                               "-d", ",".join(map(str, depths)), "--reps", "1"], timeout)
        speeds = {r["test"]: float(r["tokens_per_s"]) for r in doc["results"]}
        rss = doc["rss"]
        return speeds, rss["peak_kib"] - rss["baseline_kib"], rss["baseline_kib"]

    def first_token(self, model, threads, ctx, timeout):
        doc, t_spawn = self._worker(["first-token", "--model", model, "--threads",
                                     str(threads), "--prompt", FIRST_TOKEN_PROMPT,
                                     "--ctx", str(ctx)], timeout)
        return {"load_to_first_token_ms": (doc["t_first_token"] - doc["t_load_start"]) * 1e3,
                "startup_ms": (doc["t_load_start"] - t_spawn) * 1e3}


# ---------------------------------------------------------------- decode roofline

# Bytes per block and values per block of the GGML types (ggml.c's type_traits).
GGML_BLOCKS = {
    "F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "Q4_0": (32, 18), "Q4_1": (32, 20),
    "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34), "Q8_1": (32, 36),
    "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144), "Q5_K": (256, 176),
    "Q6_K": (256, 210), "Q8_K": (256, 292), "IQ4_NL": (32, 18), "IQ4_XS": (256, 136),
}


def model_bytes(owl_binary, path):
    """What one decode step must read: every weight once (the token embedding only when it
    is also the output head: otherwise one row, not counted), and per cached position the
    KV cache bytes (f16, as `owl inspect` reports them). None when unknown."""
    try:
        r = subprocess.run([owl_binary, "inspect", path, "--json", "--tensors"],
                           capture_output=True, text=True, timeout=120)
        doc = parse_json_out(r.stdout)
        tensors = doc["tensors"]
        names = {t["name"] for t in tensors}
        total = 0
        for t in tensors:
            if t["name"] == "token_embd.weight" and "output.weight" in names:
                continue
            per_block, block_bytes = GGML_BLOCKS[t["type"]]
            n = 1
            for dim in t["shape"]:
                n *= dim
            total += n // per_block * block_bytes
        return {"weights": total, "kv_per_position": doc["kv_cache_bytes_per_token"]}
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, TypeError) as e:
        print(f"  ! roofline: no byte count for {path}: {e}", file=sys.stderr)
        return None


def read_bandwidth(repo, threads):
    """{threads: GB/s}: kernel_bench's read bandwidth (an AVX2 sum over a 1 GiB buffer in
    64 MiB slices; see docs/PERFORMANCE.md), {} when it cannot run."""
    cmd = ["cargo", "run", "--release", "--quiet", "-p", "owl-kernels", "--example",
           "kernel_bench", "--", "--no-matvec", "--no-prefill",
           "--threads", ",".join(map(str, threads))]
    print("measuring read bandwidth: " + " ".join(cmd), file=sys.stderr, flush=True)
    try:
        r = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"  ! read bandwidth: {e}", file=sys.stderr)
        return {}
    out, table = {}, False
    for line in r.stdout.splitlines():
        if line.startswith("## "):
            table = line.startswith("## Read bandwidth")
        m = re.match(r"\|\s*(\d+)\s*\|\s*([\d.]+)", line) if table else None
        if m:
            out[int(m.group(1))] = float(m.group(2))
    if not out:
        print(f"  ! read bandwidth: nothing parsed ({last_line(r.stderr or r.stdout)})",
              file=sys.stderr)
    return out


# ---------------------------------------------------------------- statistics and table


def summary(values):
    if not values:
        return None
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": mean, "stddev": sd, "n": len(values), "samples": values}


def fmt(s, digits):
    if s is None:
        return "-"
    return f"{s['mean']:.{digits}f} ± {s['stddev']:.{digits}f}"


def print_table(block, owl_note):
    head = (f"{block['model_name']} ({os.path.basename(block['model_path'])}) · "
            f"{block['threads']} thread{'s' if block['threads'] != 1 else ''} · "
            f"{block['reps']} reps, interleaved")
    print()
    print(head)
    print("-" * len(head))
    rows = [("metric", "owl", "llama.cpp", "owl ÷ llama.cpp")]
    for m in block["metrics"]:
        ratio = "-" if m["ratio"] is None else f"{m['ratio']:.2f}"
        rows.append((m["label"], fmt(m["owl"], m["digits"]), fmt(m["llama"], m["digits"]), ratio))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for i, r in enumerate(rows):
        print(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}")
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for note in block["notes"]:
        print("  note: " + note)
    if owl_note:
        print("  owl: " + owl_note)
    sys.stdout.flush()


# ---------------------------------------------------------------- driver


def resolve_model(repo, name):
    if os.path.isfile(name):
        return os.path.basename(name), os.path.abspath(name)
    script = os.path.join(repo, "scripts", "fetch-demo-models.sh")
    r = subprocess.run([script, name], capture_output=True, text=True)
    path = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    if r.returncode != 0 or not os.path.isfile(path):
        sys.exit(f"error: model {name!r} is neither a file nor a demo model "
                 f"({', '.join(DEMO_MODELS)}): {last_line(r.stderr)}")
    return name, path


def ensure_owl(repo, binary, force_build):
    default = os.path.join(repo, "target", "release", "owl")
    if binary and binary != default:
        if not os.access(binary, os.X_OK):
            sys.exit(f"error: --owl {binary} is not an executable file")
        return binary
    if force_build or not os.access(default, os.X_OK):
        print(f"building owl: cargo build --release -p owl-cli (in {repo})", file=sys.stderr)
        if shutil.which("cargo") is None:
            sys.exit("error: cargo not found; install Rust or pass --owl BINARY / --no-owl")
        r = subprocess.run(["cargo", "build", "--release", "-p", "owl-cli"], cwd=repo)
        if r.returncode != 0 or not os.access(default, os.X_OK):
            sys.exit("error: building owl failed (see cargo's output above)")
    return default


def test_name(kind, n, depth):
    """llama-bench's (and owl bench's) name of a test: pp512, tg128 @ d4096."""
    return f"{kind}{n}" + (f" @ d{depth}" if depth > 0 else "")


def measure(a, owl, llama, name, path, threads, roofline=None, model_bytes=None):
    owl_on = owl is not None and owl.has_bench
    ft_on = owl is not None and owl.has_generate
    tests = [test_name("pp", n, d) for d in a.n_depth for n in a.n_prompt] + \
        [test_name("tg", n, d) for d in a.n_depth for n in a.n_gen]
    speeds = {"owl": {t: [] for t in tests}, "llama": {t: [] for t in tests}}
    rss = {"owl": [], "llama": []}
    ftt = {"owl": [], "llama": []}
    startup = []
    baseline = []
    errors = []

    def attempt(what, fn):
        try:
            return fn()
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            errors.append(f"{what}: {e}")
            print(f"  ! {what}: {e}", file=sys.stderr)
            return None

    for rep in range(a.reps):
        print(f"  {name} t={threads} rep {rep + 1}/{a.reps}", file=sys.stderr, flush=True)
        if owl_on:
            r = attempt("owl bench", lambda: owl.bench(path, threads, a.n_prompt, a.n_gen,
                                                       a.n_depth, a.timeout, a.owl_args))
            if r:
                for t in tests:
                    if t in r[0]:
                        speeds["owl"][t].append(r[0][t])
                rss["owl"].append(r[1] / 1024)
        if not a.no_llama:
            r = attempt("llama.cpp bench", lambda: llama.bench(path, threads, a.n_prompt,
                                                               a.n_gen, a.n_depth, a.timeout))
            if r:
                for t in tests:
                    if t in r[0]:
                        speeds["llama"][t].append(r[0][t])
                rss["llama"].append(r[1] / 1024)
                baseline.append(r[2] / 1024)
        if ft_on:
            r = attempt("owl first token", lambda: owl.first_token(path, threads, a.ctx,
                                                                   a.timeout, a.owl_args))
            if r:
                ftt["owl"].append(r["load_to_first_token_ms"])
        if not a.no_llama:
            r = attempt("llama.cpp first token",
                        lambda: llama.first_token(path, threads, a.ctx, a.timeout))
            if r:
                ftt["llama"].append(r["load_to_first_token_ms"])
                startup.append(r["startup_ms"])

    metrics = []

    def add(key, label, digits, o, l):
        so, sl = summary(o), summary(l)
        ratio = so["mean"] / sl["mean"] if so and sl and sl["mean"] > 0 else None
        metrics.append({"key": key, "label": label, "digits": digits,
                        "owl": so, "llama": sl, "ratio": ratio})

    for t in tests:
        add(t, f"{t} tok/s (higher is better)", 1, speeds["owl"][t], speeds["llama"][t])
    roof = roofline.get(threads) if roofline else None
    if roof and model_bytes:
        for d in a.n_depth:
            for n in a.n_gen:
                t = test_name("tg", n, d)
                # Mean cache length over the N steps: positions d .. d+N-1 read p+1 rows.
                per_token = model_bytes["weights"] + model_bytes["kv_per_position"] * (d + (n + 1) / 2)
                limit = roof * 1e9 / per_token
                pct = [[100 * v / limit for v in speeds[k][t]] for k in ("owl", "llama")]
                add(t + "_roofline_pct", f"{t} % of roofline ({limit:.0f} tok/s)", 0, pct[0], pct[1])
    add("peak_rss_mib", "peak RSS MiB (lower is better)", 1, rss["owl"], rss["llama"])
    add("load_to_first_token_ms", "load → first token ms (lower is better)", 1,
        ftt["owl"], ftt["llama"])
    notes = []
    if baseline:
        notes.append(f"llama.cpp RSS excludes the Python interpreter's {statistics.fmean(baseline):.1f} "
                     "MiB measured before loading the model")
    if startup:
        notes.append(f"llama.cpp first token excludes {statistics.fmean(startup):.0f} ms of Python "
                     "start-up and imports")
    notes += errors[:6]
    return {"model_name": name, "model_path": path, "threads": threads, "reps": a.reps,
            "metrics": metrics, "notes": notes}


def write_json_atomic(path, doc):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".compare-", suffix=".json", dir=d)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def int_list(s, least=1):
    try:
        v = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}")
    if not v or min(v) < least:
        raise argparse.ArgumentTypeError(f"expected integers >= {least}, got {s!r}")
    return v


def depth_list(s):
    return int_list(s, least=0)


def git_rev(repo):
    try:
        rev = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30).stdout.strip()
        return rev + ("-dirty" if dirty else "") if rev else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    p = argparse.ArgumentParser(
        prog="bench/compare/run.sh",
        description="owl vs llama.cpp (llama-cpp-python), same model/prompt/threads, interleaved.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--models", default=",".join(DEMO_MODELS),
                   help="comma-separated demo model names or GGUF paths (default: all demo models)")
    p.add_argument("--threads", type=int_list, default=[1, 2], help="thread counts (default 1,2)")
    p.add_argument("--reps", type=int, default=5, help="interleaved repetitions (default 5)")
    p.add_argument("-p", "--n-prompt", type=int_list, default=[64, 512], help="default 64,512")
    p.add_argument("-n", "--n-gen", type=int_list, default=[128], help="default 128")
    p.add_argument("-d", "--n-depth", type=depth_list, default=[0],
                   help="llama-bench's -d: tests start from a cache of this many tokens "
                        "(default 0; e.g. 0,4096)")
    p.add_argument("--no-roofline", action="store_true",
                   help="skip the read-bandwidth measurement and the tg %% of roofline rows")
    p.add_argument("--ctx", type=int, default=4096,
                   help="context size for the first-token run (both tools; owl via --ctx-size)")
    p.add_argument("--flash-attn", choices=["auto", "on", "off"], default="auto",
                   help="llama.cpp flash attention (default auto, as llama-bench)")
    p.add_argument("--json", metavar="OUT", help="also write every sample and the setup to OUT")
    p.add_argument("--owl", metavar="BINARY", help="owl binary (default target/release/owl, built if missing)")
    p.add_argument("--build", action="store_true", help="run cargo build --release -p owl-cli first")
    p.add_argument("--owl-args", default="", help="extra arguments for owl bench/generate")
    p.add_argument("--no-owl", action="store_true", help="only measure llama.cpp")
    p.add_argument("--no-llama", action="store_true", help="only measure owl")
    p.add_argument("--timeout", type=float, default=900, help="seconds per process (default 900)")
    p.add_argument("--repo", default=os.path.dirname(os.path.dirname(HERE)), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.reps < 1:
        p.error("--reps must be at least 1")
    a.owl_args = a.owl_args.split()

    owl, owl_note = None, None
    if not a.no_owl:
        owl = Owl(ensure_owl(a.repo, a.owl, a.build))
        if not owl.has_bench:
            owl_note = (f"{owl.binary} has no `bench` subcommand yet: owl's speed and RSS "
                        "columns are empty (llama.cpp side measured anyway)")
        if not owl.has_generate:
            owl_note = ((owl_note + "; ") if owl_note else "") + \
                "no `generate` subcommand: owl's first-token column is empty"
    llama = LlamaCpp(sys.executable, a.flash_attn)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"owl {git_rev(a.repo) or '?'} vs llama.cpp@{LLAMA_CPP_COMMIT} (llama-cpp-python, "
          f"built by setup_venv.sh, flash-attn {a.flash_attn}) on {cpu_name()}, {os.cpu_count()} CPUs"
          + (f", load average {load:.2f} at start" if load is not None else ""))
    if load is not None and load > 0.5:
        print("warning: the machine is not idle; other processes skew absolute numbers "
              "(interleaving keeps the ratios fairer)")
    roofline = {}
    if not a.no_roofline and owl is not None:
        roofline = read_bandwidth(a.repo, a.threads)
        if roofline:
            print("read bandwidth (kernel_bench): " +
                  ", ".join(f"{t} thread{'s' if t != 1 else ''} {g:.1f} GB/s"
                            for t, g in sorted(roofline.items())))
    blocks = []
    for spec in a.models.split(","):
        spec = spec.strip()
        if not spec:
            continue
        name, path = resolve_model(a.repo, spec)
        bytes_per = model_bytes(owl.binary, path) if roofline else None
        for threads in a.threads:
            block = measure(a, owl, llama, name, path, threads, roofline, bytes_per)
            print_table(block, owl_note)
            blocks.append(block)

    if llama.info.get("system_info"):
        print(f"\nllama.cpp {llama.info['system_info']}")

    if a.json:
        doc = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "owl": {"binary": owl.binary if owl else None, "git": git_rev(a.repo),
                    "has_bench": bool(owl and owl.has_bench)},
            "llama_cpp": dict(llama.info, commit=LLAMA_CPP_COMMIT, flash_attn=a.flash_attn),
            "cpu": cpu_name(), "cpus": os.cpu_count(), "load_average_at_start": load,
            "n_prompt": a.n_prompt, "n_gen": a.n_gen, "n_depth": a.n_depth,
            "read_bandwidth_gb_s": roofline, "ctx_first_token": a.ctx,
            "first_token_prompt": FIRST_TOKEN_PROMPT,
            "results": blocks,
        }
        write_json_atomic(a.json, doc)
        print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()
