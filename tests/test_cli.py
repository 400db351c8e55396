"""The command line: the summary JSON, the PNG, every builtin model, and one-line errors.

Most tests run ``python -m fa_core`` in a fresh interpreter importing the fa_core under test
(the checkout's, or the installed wheel's in CI), so exit codes and stderr are the user's.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import fa_core
from fa_core import builtin_models, cli
from fa_core.population import default_threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fa_core.__file__)))

SUMMARY_KEYS = {"fa_core_version", "model", "agents", "steps", "seed", "threads", "workers",
                "address", "agent_steps_per_s", "seconds", "memory_per_agent_bytes",
                "model_bytes", "world_bytes", "rss_bytes", "step_agent_steps_per_s",
                "behaviour", "pymdp"}


def run_cli(args, cwd, prelude: str = "", env: dict | None = None):
    """``python -m fa_core ARGS`` (after ``prelude``, e.g. hiding a module) in ``cwd``."""
    code = f"import sys, runpy\n{prelude}\nsys.argv = ['fa_core'] + {list(args)!r}\n" \
           "runpy.run_module('fa_core', run_name='__main__', alter_sys=True)"
    environ = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    environ.pop("RAY_ADDRESS", None)
    environ.update(env or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=cwd, env=environ, timeout=300)


def assert_one_line_error(proc, *words):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("python -m fa_core: error: "), lines[0]
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_simulate_writes_json_and_png(tmp_path):
    proc = run_cli(["simulate", "--model", "grid10", "--agents", "2000", "--steps", "5",
                    "--json", "out.json", "--plot", "out.png",
                    "--pymdp-budget", "600"], tmp_path)  # a loaded machine is slow to load pymdp
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out.json").read_text())
    assert set(summary) == SUMMARY_KEYS
    assert summary["fa_core_version"] == fa_core.__version__
    assert (summary["model"], summary["agents"], summary["steps"]) == ("grid10", 2000, 5)
    assert summary["threads"] == default_threads()
    assert summary["agent_steps_per_s"] > 0 and summary["seconds"] > 0
    assert len(summary["step_agent_steps_per_s"]) == 4  # steps 2..5 (step 1 is traced)
    # a grid10 agent owns its beliefs (100 states), policy posterior and a few scalars
    assert 400 < summary["memory_per_agent_bytes"] < 4000
    assert summary["model_bytes"] > 10_000  # A and B of 100 states, stored once
    assert set(summary["behaviour"]) == {"found_food_fraction", "mean_steps_on_food"}
    assert 0 <= summary["behaviour"]["found_food_fraction"] <= 1
    pymdp = summary["pymdp"]  # pymdp is a test dependency: the comparison ran
    assert pymdp["timed_out"] is False
    assert pymdp["bytes_per_agent"] > summary["memory_per_agent_bytes"]
    assert pymdp["bytes_per_agent_own_model"] > pymdp["bytes_per_agent"]
    assert pymdp["seconds"] == pytest.approx(pymdp["seconds_per_agent_step"] * 2000 * 5)
    assert "pymdp" in proc.stdout and "agent-steps/s" in proc.stdout
    assert "agent-step" in proc.stderr  # tqdm's bar, on stderr
    import matplotlib  # a [test] dependency
    matplotlib.use("Agg")
    from matplotlib.image import imread
    png = imread(tmp_path / "out.png")
    assert png.ndim == 3 and png.shape[0] > 100 and png.shape[1] > 400
    assert png[..., :3].std() > 0.05  # not a blank canvas


def test_version():
    out = io.StringIO()
    with pytest.raises(SystemExit) as exc:
        sys_stdout, sys.stdout = sys.stdout, out
        try:
            cli.main(["--version"])
        finally:
            sys.stdout = sys_stdout
    assert exc.value.code == 0
    assert out.getvalue().strip() == f"fa-core {fa_core.__version__}"


def test_console_script_declared():
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "pyproject.toml"),
              encoding="utf-8") as f:
        text = f.read()  # no tomllib on Python 3.10
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    entries = [line.strip() for line in section.splitlines()
               if line.strip() and not line.lstrip().startswith("#")]
    assert entries == ['fa-core = "fa_core.cli:main"']
    assert callable(cli.main)


@pytest.mark.parametrize("model", sorted(builtin_models.MODELS))
def test_every_builtin_model_runs(model, tmp_path):
    assert model in cli.ENVS
    out = io.StringIO()
    result = cli.simulate(model, 24, 3, seed=2, threads=1, out=out)
    assert result["agent_steps_per_s"] > 0
    assert result["population"].n_agents == 24
    assert result["behaviour"] and all(np.isfinite(v) for v in result["behaviour"].values())
    assert "behaviour:" in out.getvalue()
    summary = cli.summary_json(result)
    assert set(summary) == SUMMARY_KEYS
    json.dumps(summary)  # plain values only
    cli.write_plot(result, str(tmp_path / "run.png"))
    assert (tmp_path / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_same_run():
    a = cli.simulate("tmaze", 40, 4, seed=5, threads=1, out=io.StringIO())
    b = cli.simulate("tmaze", 40, 4, seed=5, threads=2, out=io.StringIO())
    np.testing.assert_array_equal(a["population"].qs, b["population"].qs)
    assert a["behaviour"] == b["behaviour"]


def test_workers_without_ray_is_one_line(tmp_path):
    proc = run_cli(["simulate", "--agents", "10", "--steps", "2", "--workers", "2"], tmp_path,
                   prelude="sys.modules['ray'] = None  # as if Ray were not installed")
    assert_one_line_error(proc, "--workers needs Ray", "fa_core[ray]")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed on exit: nothing listens there


def test_unreachable_cluster_is_one_line(tmp_path):
    port = _free_port()
    proc = run_cli(["simulate", "--agents", "10", "--steps", "2",
                    "--address", f"127.0.0.1:{port}"], tmp_path)
    assert_one_line_error(proc, "cannot reach a Ray cluster", f"127.0.0.1:{port}")
    proc = run_cli(["simulate", "--agents", "10", "--steps", "2", "--address", "auto"],
                   tmp_path, env={"RAY_ADDRESS": f"127.0.0.1:{port}"})
    assert_one_line_error(proc, "--address auto", "cannot reach")
    proc = run_cli(["simulate", "--address", "nowhere"], tmp_path)
    assert_one_line_error(proc, "HOST:PORT")


def test_plot_without_matplotlib_is_one_line(tmp_path):
    proc = run_cli(["simulate", "--agents", "10", "--steps", "2", "--plot", "x.png"], tmp_path,
                   prelude="sys.modules['matplotlib'] = None")
    assert_one_line_error(proc, "--plot needs matplotlib")
    assert not (tmp_path / "x.png").exists()


def test_unwritable_json_is_one_line(tmp_path):
    proc = run_cli(["simulate", "--agents", "10", "--steps", "2", "--no-pymdp",
                    "--json", str(tmp_path / "missing" / "out.json")], tmp_path)
    assert_one_line_error(proc, "--json", "cannot write there")


def test_more_threads_than_cores_warns(tmp_path):
    k = default_threads() + 1
    proc = run_cli(["simulate", "--model", "tmaze", "--agents", "10", "--steps", "2",
                    "--threads", str(k), "--no-pymdp", "--no-progress"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"WARNING: {k} threads on {default_threads()} core(s)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_print_in_library():
    """The library reports through logging and warnings; only the command line prints."""
    import ast
    pkg = os.path.dirname(os.path.abspath(fa_core.__file__))
    offenders = []
    for name in sorted(os.listdir(pkg)):
        if not name.endswith(".py") or name in ("cli.py", "__main__.py"):
            continue
        with open(os.path.join(pkg, name), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        offenders += [f"{name}:{node.lineno}" for node in ast.walk(tree)
                      if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"]
    assert offenders == []


def test_memory_counts_the_agents_not_their_world():
    """grid30_confused lives in a ModelWorld, which keeps float64 copies of A (900 x 900) and
    B (900 x 900 x 5): 39 MB that are the world's, not the agents'. An agent owns its beliefs
    (900 float32), its policy posterior and a few scalars."""
    out = io.StringIO()
    result = cli.simulate("grid30_confused", 200, 2, seed=0, threads=1, out=out)
    assert 900 * 4 <= result["bytes_per_agent"] < 8000
    assert result["world_bytes"] > 8 * 900 * 900 * 6
    assert result["model_bytes"] < result["world_bytes"]
    line = next(x for x in out.getvalue().splitlines() if x.startswith("memory:"))
    assert "per agent" in line and "the world (ModelWorld)" in line
    assert cli.summary_json(result)["world_bytes"] == result["world_bytes"]


def test_pymdp_comparison_never_prints_a_nonsense_ratio():
    pymdp = {"version": "x", "timed_out": False, "bytes_per_agent": 13_000.0,
             "bytes_per_agent_own_model": 37e6, "memory_bytes": 13e6, "seconds": 300.0,
             "seconds_per_agent_step": 0.06, "steps_timed": 5}
    # fa_core agents owning more than pymdp's (60 KB against 13 KB): "more", not "0x less"
    text = cli._pymdp_sentences(pymdp, 1000, 5, 60_000.0 * 1000, 1.0)
    assert "4.6x more memory per agent" in text and " 0x" not in text
    text = cli._pymdp_sentences(pymdp, 1000, 5, 3_700.0 * 1000, 600.0)
    assert "3.5x less memory per agent" in text and "2.0x slower" in text
    text = cli._pymdp_sentences(pymdp, 1000, 5, 13_100.0 * 1000, 0.25)
    assert "about the same memory per agent" in text and "1,200x faster" in text
    assert cli._compare(1.0, "better", "worse", "same") == "same"
    assert cli._compare(0.001, "better", "worse", "same") == "1,000x worse"


def test_pymdp_estimate_stops_at_its_budget():
    """A pymdp measurement that cannot finish in its budget stops and says so (pymdp needs
    about 100 s for one four_factor agent-step; a 0.05 s budget cannot even load pymdp)."""
    out = cli.pymdp_estimate("four_factor", 10, 2, budget_s=0.05)
    assert out["timed_out"] is True and out["budget_s"] == 0.05
    assert out["bytes_per_agent"] is None and out["memory_bytes"] is None
    text = cli._pymdp_sentences(out, 10, 2, 1000.0, 1.0)
    assert "budget" in text and "--pymdp-budget" in text


def test_pymdp_estimate_measures_a_small_model():
    out = cli.pymdp_estimate("tmaze", 100, 3, max_steps=2, budget_s=120)
    assert out["timed_out"] is False and out["steps_timed"] >= 1
    assert out["bytes_per_agent_own_model"] > out["bytes_per_agent"] > 0
    assert out["seconds"] == pytest.approx(out["seconds_per_agent_step"] * 300)
    assert out["memory_bytes"] == pytest.approx(out["bytes_per_agent"] * 100 + out["model_bytes"])
