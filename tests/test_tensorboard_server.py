"""A finished run, as the real TensorBoard server serves it over HTTP.

One tiny `tape` run with a profile window (steps 3-5) is written to a
temporary log directory; the `tensorboard` executable of this Python's
environment serves it on a free 127.0.0.1 port, and the tests query the HTTP
data API the TensorBoard UI itself uses (routes below). The server runs in its
own process group and is always killed at the end. `scripts/tensorboard.sh`
is started the same way and stopped by killing its process group.

Routes (TensorBoard 2.21, tensorboard-plugin-profile / xprof 2.24):
    GET  /data/runs
    GET  /data/plugins_listing
    GET  /data/plugin/scalars/tags
    GET  /data/plugin/scalars/scalars?run=<run>/train&tag=epoch_loss
    GET  /data/plugin/histograms/tags
    GET  /data/plugin/histograms/histograms?run=<run>/train&tag=<weight>
    GET  /data/plugin/graphs/info
    GET  /data/plugin/graphs/graph?run=<run>/train
    GET  /data/plugin/text/tags, /data/plugin/text/text?run=<run>&tag=flags
    POST /data/plugin/hparams/experiment      {"experimentName": ""}
    POST /data/plugin/hparams/session_groups  {"experimentName": "", "allowedStatuses": [...],
                                               "colParams": [], "startIndex": 0, "sliceSize": 100}
    GET  /data/plugin/profile/runs            (gzip-encoded JSON)
    GET  /data/plugin/profile/run_tools?run=<run>/<capture folder>
    GET  /data/plugin/profile/hosts?run=...&tag=framework_op_stats
    GET  /data/plugin/profile/data?run=...&tag=framework_op_stats&host=<host>

Real TensorFlow and TensorBoard, no mocks. About 15 s on a 2-core CPU.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import keras  # noqa: E402
import tb_util  # noqa: E402  (also puts the repository root on sys.path)

from harness import train  # noqa: E402
from harness.config import Config  # noqa: E402

REPO = tb_util.REPO
RUN = "tb-run"
EPOCHS = 2
PROFILE = (3, 5)
HPARAMS = ("mode", "model", "dataset", "optimizer", "learning_rate", "batch_size", "seed")
STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]

pytestmark = pytest.mark.skipif(
    not tb_util.tensorboard_executable().exists(), reason=f"no {tb_util.tensorboard_executable()}"
)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """(logdir, Result) of a finished tiny run with a profile capture."""
    logdir = tmp_path_factory.mktemp("tb") / "logs"
    keras.backend.clear_session()
    result = train(
        Config(
            mode="tape",
            epochs=EPOCHS,
            num_examples=300,
            max_len=60,
            logdir=str(logdir),
            run_name=RUN,
            verbose=0,
            summary_every_steps=3,
            histogram_freq=1,
            profile_steps=(PROFILE,),
        ),
        print_fn=lambda s: None,
    )
    captures = list((Path(result.run_dir) / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert captures, "the run wrote no profile capture"
    return logdir, result


@pytest.fixture(scope="module")
def server(finished_run, tmp_path_factory):
    logdir, _ = finished_run
    log = tmp_path_factory.mktemp("tb-server") / "tensorboard.log"
    with tb_util.TensorBoardServer(logdir, log) as running:
        running.wait_for_run(RUN)
        yield running
    assert running.process.poll() is not None, "the server is still running"


@pytest.mark.slow
def test_runs_are_listed(server):
    runs = server.get_json("/data/runs")
    assert {RUN, f"{RUN}/train", f"{RUN}/validation"} <= set(runs), runs
    plugins = server.get_json("/data/plugins_listing")
    for name in ("scalars", "histograms", "graphs", "hparams", "text", "profile"):
        assert plugins.get(name, {}).get("enabled"), (name, plugins.get(name))


@pytest.mark.slow
def test_scalars_are_served(server, finished_run):
    _, result = finished_run
    tags = server.get_json("/data/plugin/scalars/tags")
    for tag in (
        "epoch_loss",
        "epoch_accuracy",
        "epoch_top5_accuracy",
        "epoch_learning_rate",
        "epoch_examples_per_second",
        "epoch_seconds",
        "batch_loss",
        "batch_learning_rate",
    ):
        assert tag in tags[f"{RUN}/train"], tag
    assert {"epoch_loss", "epoch_accuracy", "epoch_top5_accuracy"} <= set(tags[f"{RUN}/validation"])
    for split, prefix in (("train", ""), ("validation", "val_")):
        points = server.get_json(
            "/data/plugin/scalars/scalars", run=f"{RUN}/{split}", tag="epoch_loss"
        )
        assert [step for _, step, _ in points] == list(range(1, EPOCHS + 1))
        assert [value for _, _, value in points] == pytest.approx(
            result.history[f"{prefix}loss"], rel=1e-6
        )


@pytest.mark.slow
def test_histograms_are_served(server):
    tags = server.get_json("/data/plugin/histograms/tags")[f"{RUN}/train"]
    weights = [tag for tag in tags if not tag.endswith("/gradient")]
    weights = [tag for tag in weights if not tag.startswith("health/")]  # activations
    assert len(weights) >= 4, tags
    assert all(f"{tag}/gradient" in tags for tag in weights), tags
    kernel = next(tag for tag in weights if tag.endswith("head/kernel"))
    for tag in (kernel, f"{kernel}/gradient"):
        series = server.get_json("/data/plugin/histograms/histograms", run=f"{RUN}/train", tag=tag)
        assert [step for _, step, _ in series] == list(range(1, EPOCHS + 1)), tag
        for _, _, buckets in series:
            assert sum(count for _, _, count in buckets) > 0, tag


@pytest.mark.slow
def test_graph_is_served(server):
    info = server.get_json("/data/plugin/graphs/info")
    assert info[f"{RUN}/train"]["run_graph"] is True, info
    status, body = server.get("/data/plugin/graphs/graph", run=f"{RUN}/train")
    assert status == 200
    text = body.decode()
    assert text.count("node {") > 100
    for op in ("Conv2D", "MatMul", "Conv2DBackpropFilter"):
        assert f'op: "{op}"' in text, op


@pytest.mark.slow
def test_flags_text_is_served(server):
    assert "flags" in server.get_json("/data/plugin/text/tags")[RUN]
    text = server.get_json("/data/plugin/text/text", run=RUN, tag="flags")
    assert text and "summary_every_steps" in text[0]["text"]


@pytest.mark.slow
def test_hparams_plugin_lists_the_session(server, finished_run):
    _, result = finished_run
    experiment = server.post_json("/data/plugin/hparams/experiment", {"experimentName": ""})
    names = {info["name"] for info in experiment["hparamInfos"]}
    assert set(HPARAMS) <= names, names
    metrics = {(m["name"].get("group", ""), m["name"]["tag"]) for m in experiment["metricInfos"]}
    assert {
        ("validation", "epoch_loss"),
        ("train", "epoch_loss"),
        ("validation", "epoch_accuracy"),
    } <= metrics, metrics

    groups = server.post_json(
        "/data/plugin/hparams/session_groups",
        {
            "experimentName": "",
            "allowedStatuses": STATUSES,
            "colParams": [],
            "startIndex": 0,
            "sliceSize": 100,
        },
    )
    assert [g["name"] for g in groups["sessionGroups"]] == [RUN], groups
    [group] = groups["sessionGroups"]
    assert group["hparams"]["mode"] == "tape"
    assert group["hparams"]["model"] == "sequential"
    assert group["hparams"]["dataset"] == "synthetic"
    assert group["hparams"]["optimizer"] == "nadam"
    assert group["hparams"]["learning_rate"] == pytest.approx(1e-3)
    assert group["hparams"]["batch_size"] == 32
    assert group["hparams"]["seed"] == Config().seed
    [session] = group["sessions"]
    assert session["name"] == RUN
    final = {(m["name"].get("group", ""), m["name"]["tag"]): m for m in session["metricValues"]}
    val_loss = final[("validation", "epoch_loss")]
    assert val_loss["trainingStep"] == EPOCHS
    assert val_loss["value"] == pytest.approx(result.history["val_loss"][-1], rel=1e-6)


@pytest.mark.slow
def test_profile_plugin_lists_the_capture(server):
    runs = server.get_json("/data/plugin/profile/runs")
    ours = [run for run in runs if run.startswith(f"{RUN}/")]
    assert len(ours) == 1, runs
    capture = ours[0]
    assert capture.endswith(f"_steps_{PROFILE[0]}-{PROFILE[1]}"), capture
    tools = server.get_json("/data/plugin/profile/run_tools", run=capture)
    for tool in ("overview_page", "framework_op_stats", "trace_viewer@"):
        assert tool in tools, tools
    hosts = server.get_json("/data/plugin/profile/hosts", run=capture, tag="framework_op_stats")
    assert hosts, hosts
    host = hosts[0]["hostname"]
    status, body = server.get(
        "/data/plugin/profile/data", run=capture, tag="framework_op_stats", host=host
    )
    assert status == 200 and len(body) > 100, body[:300]
    assert b"MatMul" in body or b"Conv2D" in body, body[:300]


# --- scripts/tensorboard.sh -------------------------------------------------------------


def _script_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TENSORBOARD", "TB_HOST")}
    env["VIRTUAL_ENV"] = str(Path(sys.executable).parent.parent)
    env.update(extra)
    return env


@pytest.mark.slow
def test_tensorboard_sh_serves_the_logdir(finished_run, tmp_path):
    logdir, _ = finished_run
    port = tb_util.free_port()
    out = tmp_path / "tensorboard-sh.log"
    with open(out, "wb") as log:
        process = subprocess.Popen(
            ["bash", str(REPO / "scripts" / "tensorboard.sh"), str(logdir), str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_script_env(),
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        first = tb_util.poll(
            lambda: out.read_text().splitlines()[:1],
            timeout=30,
            what="the script's first line",
            process=process,
            log=out,
        )
        assert url in first[0], first  # the URL comes first, before TensorBoard's noise
        tb_util.poll(
            lambda: tb_util.http_get(url, timeout=2)[0] == 200,
            timeout=60,
            what=f"{url} to answer",
            process=process,
            log=out,
        )
        tb_util.poll(
            lambda: RUN in tb_util.http_get(url + "data/runs", timeout=2)[1].decode(),
            timeout=60,
            what="the run to be listed",
            process=process,
            log=out,
        )
    finally:
        tb_util.stop_process_group(process)
    assert process.poll() is not None


def test_tensorboard_sh_warns_about_a_non_loopback_host(tmp_path):
    # `true` stands in for tensorboard: nothing listens, the script's own output is checked.
    completed = subprocess.run(
        ["bash", str(REPO / "scripts" / "tensorboard.sh"), str(tmp_path), "6123"],
        capture_output=True,
        text=True,
        timeout=30,
        env=_script_env(TB_HOST="0.0.0.0", TENSORBOARD="true"),
    )
    assert completed.returncode == 0, completed.stderr
    assert "WARNING" in completed.stderr and "0.0.0.0" in completed.stderr
    assert "http://0.0.0.0:6123/" in completed.stdout
    quiet = subprocess.run(
        ["bash", str(REPO / "scripts" / "tensorboard.sh"), str(tmp_path), "6123"],
        capture_output=True,
        text=True,
        timeout=30,
        env=_script_env(TENSORBOARD="true"),
    )
    assert quiet.returncode == 0 and "WARNING" not in quiet.stderr
    assert quiet.stdout.startswith("TensorBoard: http://127.0.0.1:6123/")
    bad = subprocess.run(
        ["bash", str(REPO / "scripts" / "tensorboard.sh"), str(tmp_path), "x"],
        capture_output=True,
        text=True,
        timeout=30,
        env=_script_env(TENSORBOARD="true"),
    )
    assert bad.returncode == 2 and "PORT" in bad.stderr
