"""``--ray``: ``medcf batch`` and ``medcf pairs`` on a real Ray cluster on loopback.

A module-scoped cluster (a head node with no CPU and two worker nodes with one CPU each,
100 MB of object store each, no dashboard) is started by this module and shut down by it.
The edits are the real ones of tests/test_batch.py (tiny random default model, 2 steps).
``medcf pairs`` needs a segmenter that accepts the random model's noise films: a fixed
atlas, registered the way a site registers its own (an entry point of the group
``medcf.segmenters``), visible to the workers through PYTHONPATH.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pydicom
import pytest

from tests import waiting
from tests.test_batch import ENV, assert_exactly_once, manifest, write_plan
from tests.test_batch import cohort, tiny_model  # noqa: F401 - fixtures shared with the plain batch's tests

pytestmark = pytest.mark.integration  # a Ray cluster on loopback (make test-fast leaves it out)

EDIT = ["--finding", "pleural_effusion", "--action", "add", "--side", "left", "--method", "regulated",
        "--steps", "2", "--quiet"]
ATLAS = "from tests.model_fixtures import AtlasSegmenter  # noqa: F401 (the entry point's target)\n"
# Joining a loopback cluster: without this, Ray swaps 127.0.0.1 for the machine's network
# address, where a cluster bound to loopback does not listen (medcf.onray.cluster sets it too).
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
# Ray lowers its workers' priority by 15 (niceness), to keep its own daemons responsive. Beside
# other jobs at normal priority that starves them (a few percent of a core each, measured on a
# busy 2-core VM), so the edits took many times longer than the work: the workers here run at
# the tests' own priority, as Ray's job supervisor runs its drivers (it sets the same switch).
WORKER_PRIORITY = {"RAY_worker_niceness": "0"}


def atlas_site(folder: Path) -> Path:
    """A folder for PYTHONPATH holding the atlas segmenter and its entry point."""
    folder.mkdir(parents=True)
    (folder / "medcf_test_atlas.py").write_text(textwrap.dedent(ATLAS))
    info = folder / "medcf_test_atlas-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: medcf-test-atlas\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[medcf.segmenters]\ntest-atlas = medcf_test_atlas:AtlasSegmenter\n")
    return folder


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return atlas_site(tmp_path_factory.mktemp("site") / "site")


@pytest.fixture(scope="module")
def env(site) -> dict:
    return {**ENV, **LOOPBACK, **WORKER_PRIORITY, "PYTHONPATH": os.pathsep.join([str(site), ENV["PYTHONPATH"]])}


@pytest.fixture(scope="module")
def ray_cluster(env):
    """Head (0 CPUs: it only coordinates) + two worker nodes (1 CPU each) on 127.0.0.1; the
    nodes' processes inherit ``env`` (the atlas on PYTHONPATH, one thread per worker)."""
    from ray.cluster_utils import Cluster

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        node = {"object_store_memory": 100 * 2 ** 20, "node_ip_address": "127.0.0.1"}
        cluster = Cluster(initialize_head=True, head_node_args={**node, "num_cpus": 0, "include_dashboard": False})
        for _ in range(2):
            cluster.add_node(num_cpus=1, **node)
        cluster.wait_for_nodes()
        yield cluster
        started = [info.process for node in cluster.list_all_nodes() for infos in node.all_processes.values()
                   for info in infos]
        cluster.shutdown()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert started and all(process.poll() is not None for process in started)  # GCS, raylets, …: all gone


# The limits of these runs are CPU seconds (tests/waiting.py), not wall seconds: the work, which
# does not grow when other jobs share the machine. Measured on a busy 2-core x86 VM (tiny model,
# 2 steps; the medcf process, the Ray processes it starts, and the cluster's): a plain batch of 3
# items 12 CPU s; `--ray local` with 2 workers 31 CPU s (300 s of wall time there); the batch of 9
# on the cluster 12 CPU s; `pairs --n 3` 11 CPU s. The budget is about 20x the largest, for a
# slower CPU; a hang is caught sooner, as a stall (idle and silent for 5 minutes).
CPU_BUDGET = 600.0


def run(env: dict, *args, probe: bool = False, watch: tuple[int, ...] = ()) -> subprocess.CompletedProcess:
    """``medcf ARGS`` in a subprocess; ``probe``: also print whether Ray was imported; ``watch``:
    other processes doing its work (a cluster's), whose CPU counts against the budget too."""
    code = ("import sys; from medcf.cli import main; sys.argv[0] = 'medcf'; code = main(sys.argv[1:]); "
            "print('ray imported:', 'ray' in sys.modules); sys.exit(code)") if probe else \
        "import sys; from medcf.cli import main; sys.exit(main(sys.argv[1:]))"
    return waiting.run([sys.executable, "-c", code, *map(str, args)], env=env, cpu_budget=CPU_BUDGET, watch=watch,
                       what=f"medcf {' '.join(map(str, args[:1]))}")


def cluster_processes(cluster) -> tuple[int, ...]:
    """The pids of a cluster's node processes (GCS, raylets, …); its workers descend from them."""
    return tuple(info.process.pid for node in cluster.list_all_nodes() for infos in node.all_processes.values()
                 for info in infos)


def pixels_by_key(out: Path) -> dict[str, bytes]:
    return {line["key"]: pydicom.dcmread(out / next(p for p in line["outputs"] if p.endswith(".dcm"))).PixelData
            for line in manifest(out) if line["status"] == "done"}


def test_plain_batch_imports_no_ray_and_ray_local_makes_the_same_edits_exactly_once(cohort, tiny_model, env,
                                                                                   tmp_path):
    plain = run(env, "batch", cohort["root"], *EDIT, "--model", tiny_model, "--out", tmp_path / "plain", probe=True)
    assert plain.returncode == 0, plain.stderr
    assert "ray imported: False" in plain.stdout
    out = tmp_path / "ray"
    done = run(env, "batch", cohort["root"], *EDIT, "--model", tiny_model, "--out", out, "--ray", "local",
               "--ray-workers", "2")
    assert done.returncode == 0, done.stderr
    assert "3 item(s): 0 done before, 3 done now, 0 failed" in done.stdout, (done.stdout, done.cpu_seconds)
    keys = {f"{uid}/add-pleural_effusion-left-defaultzone-moderate-regulated-seed0" for uid in cohort["uids"].values()}
    assert_exactly_once(out, keys)
    workers = {(line["worker"]["host"], line["worker"]["pid"]) for line in manifest(out)}
    assert len(workers) == 2  # both actors edited, each with the model it loaded once
    assert pixels_by_key(out) == pixels_by_key(tmp_path / "plain")  # the same edits, bit for bit
    # Nothing left to do: no cluster is started, Ray is not even imported.
    again = run(env, "batch", cohort["root"], *EDIT, "--model", tiny_model, "--out", out, "--ray", "local",
                probe=True)
    assert again.returncode == 0 and "3 done before, 0 done now" in again.stdout, again.stderr
    assert "ray imported: False" in again.stdout and len(manifest(out)) == 3


def test_ray_options_refuse_bad_input_in_one_line(cohort, tiny_model, env, tmp_path):
    for args, message in (
        (["--ray-workers", "2"], "--ray-workers only applies with --ray"),
        (["--ray", "local", "--ray-workers", "0"], "--ray-workers 0: at least 1"),
        (["--ray", "127.0.0.1:9"], "no Ray cluster answers there"),
        (["--ray", "nowhere"], "give 'local' or a cluster address"),
    ):
        done = run(env, "batch", cohort["root"], *EDIT, "--model", tiny_model, "--out", tmp_path / "bad", *args,
                   probe=True)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        # Refused before Ray is imported, so none of Ray's own connection retries (minutes) ran. This
        # says what a wall-clock bound said before, and holds however busy the machine is.
        assert "ray imported: False" in done.stdout, (args, done.stdout)
    assert not (tmp_path / "bad").exists()  # refused before anything was written


def test_a_cluster_of_two_workers_survives_a_killed_worker_and_does_each_item_once(cohort, tiny_model, env,
                                                                                  ray_cluster, tmp_path):
    rows = [{"study": s, "finding": "pleural_effusion", "action": "add", "side": "left", "seed": str(seed)}
            for s in ("a", "b", "c") for seed in (0, 1, 2)]
    plan = write_plan(cohort["root"] / "plan.csv", rows)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "medcf", "batch", "--plan", plan, "--model", tiny_model, *EDIT[-5:], "--out", out,
            "--ray", ray_cluster.address]
    process = subprocess.Popen(list(map(str, args)), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    workers = cluster_processes(ray_cluster)

    def first_line_written() -> bool:
        return (out / "manifest.jsonl").is_file() and bool((out / "manifest.jsonl").read_text().strip())

    try:
        waiting.wait_until(first_line_written, watch=(process.pid, *workers), cpu_budget=CPU_BUDGET, process=process,
                           what="the first item of the batch on the cluster")
    except BaseException:
        waiting.kill_tree(process)
        raise
    first = manifest(out)[0]
    victim = first["worker"]["pid"]
    os.kill(victim, signal.SIGKILL)  # the actor that made the first result, while it has more in flight
    stdout, stderr, _ = waiting.communicate(process, cpu_budget=CPU_BUDGET, watch=workers,
                                            what="the batch on the cluster")
    assert process.returncode == 0, stderr
    assert "9 item(s): 0 done before, 9 done now, 0 failed" in stdout
    lines = manifest(out)
    keys = {f"{cohort['uids'][s]}/add-pleural_effusion-left-defaultzone-moderate-regulated-seed{seed}"
            for s in ("a", "b", "c") for seed in (0, 1, 2)}
    assert_exactly_once(out, keys)
    assert len(lines) == 9  # no retried item reported twice, no failure
    pids = [line["worker"]["pid"] for line in lines]
    assert len(set(pids)) == 3, pids  # the two first actors and the victim's restarted process


def test_pairs_on_the_cluster_are_the_plain_pairs(tiny_model, env, ray_cluster, tmp_path):
    pairs = ["pairs", *EDIT, "--model", tiny_model, "--segmenter", "test-atlas", "--n", "3"]
    plain = run(env, *pairs, "--out", tmp_path / "plain")
    assert plain.returncode == 0, plain.stderr
    on_ray = run(env, *pairs, "--out", tmp_path / "ray", "--ray", ray_cluster.address,
                 watch=cluster_processes(ray_cluster))
    assert on_ray.returncode == 0, on_ray.stderr
    records = [json.loads(line) for line in (tmp_path / "ray" / "pairs.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["00000", "00001", "00002"] and [r["seed"] for r in records] == [0, 1, 2]
    assert (tmp_path / "ray" / "pairs.jsonl").read_bytes() == (tmp_path / "plain" / "pairs.jsonl").read_bytes()

    def digests(folder: Path) -> dict[str, str]:
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.glob("*/*.png"))}

    assert len(digests(tmp_path / "ray")) == 12 and digests(tmp_path / "ray") == digests(tmp_path / "plain")
