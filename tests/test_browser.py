"""A finished run, as a person sees it in TensorBoard: a real headless Chromium.

One tiny real run (2 epochs, histograms, eval figures, embeddings and layer
health every epoch) is written to a temporary log directory, the real
`tensorboard` serves it on 127.0.0.1 (`tb_util.TensorBoardServer`), and one
headless Chromium session (`browser_util.Browser`) opens each dashboard and
checks that the run's data is drawn there: a scalar card per tag with its lines,
histogram charts, the op graph's nodes, the HParams row and its first metric
column, the `flags` text, the confusion-matrix image, a PR-curve card per tag and
the Projector's points. The HTTP data API behind these pages is checked in
test_tensorboard_server.py; this module checks what the pages make of it.

A screenshot of every dashboard is kept: under `$HARNESS_TEST_OUTPUT/test_browser`
when that is set, else in pytest's temporary folder; the path is printed.
The profile dashboard is left out: its charts load Google Charts from the
internet and stay blank offline.

Skips, saying why, without selenium, Chromium or chromedriver (`.ci/run`
installs them). Marked slow; about 40 s on a 2-core CPU, training included.
"""

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser_util  # noqa: E402
import tb_util  # noqa: E402  (also puts the repository root on sys.path)

RUN = "browser-run"
EPOCHS = 2
SCALAR_TAGS = (
    "epoch_loss",
    "epoch_accuracy",
    "epoch_top5_accuracy",
    "epoch_learning_rate",
    "epoch_seconds",
    "epoch_examples_per_second",
    "batch_loss",
    "batch_learning_rate",
)
# The options beyond the tiny defaults (conftest.TINY).
OPTIONS = dict(
    run_name=RUN,
    epochs=EPOCHS,
    num_words=1000,  # the Projector's points: one per word
    summary_every_steps=3,
    histogram_freq=1,
    eval_figures_freq=1,
    embeddings_freq=1,
    diagnostics_freq=1,
)

_why_not = browser_util.missing() or (
    None if tb_util.tensorboard_executable().exists() else f"no {tb_util.tensorboard_executable()}"
)
# `slow` as the project defines it (trains a model, starts processes): the default run
# and CI (`pytest -q`) include it; only the fast lane (`-m "not slow"`) leaves it out.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_why_not is not None, reason=_why_not or ""),
]


# --- fixtures: one run, one server, one browser for the module ----------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_config, run_train):
    """(logdir, Result) of the finished tiny run."""
    import keras

    logdir = tmp_path_factory.mktemp("browser") / "logs"
    keras.backend.clear_session()
    result, _ = run_train(tiny_config(logdir, **OPTIONS))
    return logdir, result


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    logdir, result = trained
    log = tmp_path_factory.mktemp("browser-tb") / "tensorboard.log"
    with tb_util.TensorBoardServer(logdir, log) as running:
        running.wait_for_run(RUN)
        # The Projector finds out in a background thread, at the first listing, that
        # it has data; the page reads the listing once, when it loads.
        if list(Path(result.run_dir).rglob("projector_config.pbtxt")):
            running.wait_for(
                lambda: running.get_json("/data/plugins_listing")["projector"]["enabled"],
                what="the Projector plugin to find the embeddings",
                timeout=30,
            )
        yield running


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory, request):
    folder = browser_util.output_dir("test_browser", tmp_path_factory.mktemp("screenshots"))
    _say(request, f"browser screenshots: {folder}")
    with browser_util.Browser(server.url, folder) as running:
        yield running


def _say(request, line: str) -> None:
    """Prints `line` to the terminal, past pytest's output capture."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if capture is None or reporter is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


def _plugin_tags(server, plugin: str, run: str) -> dict:
    return server.get_json(f"/data/plugin/{plugin}/tags").get(run, {})


# --- the dashboards ---------------------------------------------------------------------------

SCALAR_CARDS_JS = """
const dashboard = deep(document, 'tf-scalar-dashboard')[0];
if (!dashboard) return [];
return deep(dashboard, 'tf-scalar-card').map((card) => {
  const lines = deep(card, 'path.line').filter((p) => (p.getAttribute('d') || '').length > 10);
  return {
    tag: card.tag,
    title: deepText(deep(card, 'tf-card-heading')[0] || card),
    runs: new Set(lines.map((p) => p.getAttribute('stroke') || p.style.stroke)).size,
  };
});
"""


def test_scalars_dashboard(browser):
    browser.open("#scalars")
    [outliers] = browser.wait_for(
        lambda: [
            box
            for box in browser.query("paper-checkbox", "tf-scalar-dashboard")
            if "outliers" in box.text
        ],
        what="the 'Ignore outliers' checkbox",
        screenshot="scalars",
    )
    if outliers.get_attribute("aria-checked") == "true":
        outliers.click()  # with 2 points per run, "outliers" would leave lines off the chart
    # Only the first categories start open: the filter puts every tag asked for on one page.
    [tag_filter] = browser.wait_for(
        lambda: browser.query("input", "tf-tag-filterer"), what="the tag filter"
    )
    tag_filter.send_keys(f"^({'|'.join(SCALAR_TAGS)})$")

    def drawn():
        cards = {card["tag"]: card for card in browser.evaluate(SCALAR_CARDS_JS)}
        return cards if all(cards.get(tag, {}).get("runs") for tag in SCALAR_TAGS) else None

    cards = browser.wait_for(
        drawn, what=f"a card with a drawn line for each of {SCALAR_TAGS}", screenshot="scalars"
    )
    browser.screenshot("01-scalars")
    for tag in SCALAR_TAGS:
        assert tag in cards[tag]["title"], cards[tag]
    # Train and validation both draw their line.
    assert cards["epoch_loss"]["runs"] >= 2, cards["epoch_loss"]
    assert cards["epoch_accuracy"]["runs"] >= 2, cards["epoch_accuracy"]


HISTOGRAMS_JS = """
const dashboard = deep(document, 'tf-histogram-dashboard')[0];
if (!dashboard) return null;
return {
  headings: deep(dashboard, 'tf-category-paginated-view')
    .map((view) => deepText(deep(view, '.category-name')[0] || view)),
  cards: deep(dashboard, 'tf-histogram-loader').map((card) => ({
    run: card.run,
    tag: card.tag,
    title: deepText(deep(card, 'tf-card-heading')[0] || card),
    drawn: deep(card, 'path.outline').filter((p) => (p.getAttribute('d') || '').length > 20)
      .length,
  })),
};
"""


def test_histograms_dashboard(browser, server):
    tags = _plugin_tags(server, "histograms", f"{RUN}/train")
    weights = [tag for tag in tags if re.search(r"/(kernel|bias|embeddings)$", tag)]
    assert weights and all(f"{tag}/gradient" in tags for tag in weights), sorted(tags)
    browser.open("#histograms")

    def drawn():
        page = browser.evaluate(HISTOGRAMS_JS)
        if not page or not page["cards"] or not all(card["drawn"] for card in page["cards"]):
            return None
        return page

    page = browser.wait_for(drawn, what="histogram charts drawn", screenshot="histograms")
    browser.screenshot("02-histograms")
    groups = {tag.split("/")[0] for tag in tags}
    assert groups <= set(page["headings"]), (groups, page["headings"])
    shown = {card["tag"] for card in page["cards"] if card["run"] == f"{RUN}/train"}
    assert any(tag.endswith("/kernel") for tag in shown), shown
    assert any(tag.endswith("/kernel/gradient") for tag in shown), shown
    assert all(card["tag"] in card["title"] for card in page["cards"]), page["cards"]


GRAPH_JS = """
const dashboard = deep(document, 'tf-graph-dashboard')[0];
if (!dashboard) return null;
const text = deepText(dashboard);
const failed = text.indexOf('Graph visualization failed');
return {
  nodes: deep(dashboard, 'g.node').map((node) => node.getAttribute('data-name')),
  failed: failed < 0 ? '' : text.slice(failed, failed + 300),
};
"""


def _graph(browser):
    """The graph now drawn ({nodes, failed}), once it is drawn or has failed."""
    page = browser.evaluate(GRAPH_JS)
    return page if page and (page["nodes"] or page["failed"]) else None


@pytest.mark.parametrize(
    ("kind", "tag", "top"),
    [("op_graph", "Default", "nadam"), ("conceptual_graph", "keras", "sequential")],
)
def test_graphs_dashboard_draws_the_op_and_the_keras_graph(browser, server, kind, tag, top):
    """The op graph (its top level: the model's call, the loss, the optimizer) and
    the Keras conceptual graph (its top level: the model), each picked as a person
    would: the run, then the tag, then the graph type."""
    train = f"{RUN}/train"
    info = server.get_json("/data/plugin/graphs/info")[train]
    assert info["run_graph"] and info["tags"]["keras"]["conceptual_graph"], info
    browser.open("#graphs")
    for menu_index, wanted in ((0, train), (1, tag)):
        _pick(browser, menu_index, wanted)
    [radio] = [
        radio
        for radio in browser.query("paper-radio-button", "tf-graph-controls")
        if radio.get_attribute("name") == kind
    ]
    if radio.get_attribute("aria-checked") != "true":
        radio.click()

    def graph_drawn():
        page = _graph(browser)
        return page if page and (page["failed"] or top in page["nodes"]) else None

    page = browser.wait_for(graph_drawn, what=f"the {kind} of {train}", screenshot="graphs")
    browser.screenshot(f"03-graphs-{kind}")
    assert radio.get_attribute("aria-checked") == "true"
    assert not page["failed"], page["failed"]
    if kind == "conceptual_graph":
        assert "nadam" not in page["nodes"], page["nodes"]  # the layers only
    else:
        assert len(page["nodes"]) >= 5, page["nodes"]


def _pick(browser, menu_index: int, wanted: str) -> None:
    """Opens the graph controls' `menu_index`-th menu (0: run, 1: tag) and picks `wanted`."""

    def items(displayed: bool):
        return [
            item
            for item in browser.query("paper-item", "tf-graph-controls")
            if item.get_attribute("textContent").strip() == wanted
            and (item.is_displayed() or not displayed)
        ]

    browser.wait_for(lambda: items(False), what=f"{wanted} in a menu")
    browser.query("paper-dropdown-menu", "tf-graph-controls")[menu_index].click()
    [item] = browser.wait_for(
        lambda: items(True), what=f"{wanted} in the opened menu", screenshot="graphs"
    )
    item.click()


def test_graphs_dashboard_first_view_draws_a_graph(browser):
    """What opens first (TensorBoard picks the first run and tag) must draw, not fail."""
    browser.open("#graphs")
    page = browser.wait_for(lambda: _graph(browser), what="a graph or an error")
    browser.screenshot("03-graphs-first-view")
    controls = browser.texts("paper-dropdown-menu", "tf-graph-controls")
    assert not page["failed"], (
        f"the Graphs tab opens on an error: {page['failed']!r} (run and tag menus: {controls})"
    )
    assert page["nodes"], page


HPARAMS_JS = """
const table = deep(document, 'tf-hparams-table-view')[0];
if (!table) return null;
return {
  headers: deep(table, '.table-header').map(deepText),
  cells: deep(table, 'vaadin-grid-cell-content').map(deepText).filter((text) => text),
};
"""


def _hparams_table(browser):
    browser.open("#hparams")
    page = browser.wait_for(
        lambda: (page := browser.evaluate(HPARAMS_JS)) and RUN in page["cells"] and page,
        what=f"the HParams table with a row for {RUN}",
        screenshot="hparams",
    )
    browser.screenshot("04-hparams")
    return page


def _metric_name(info: dict) -> str:
    """A metric's column header as the HParams table writes it."""
    name = info["name"]
    return info.get("displayName") or ".".join(p for p in (name.get("group"), name["tag"]) if p)


def test_hparams_dashboard_lists_the_run(browser, server):
    page = _hparams_table(browser)
    experiment = server.post_json("/data/plugin/hparams/experiment", {"experimentName": ""})
    assert page["headers"][:1] == ["Trial ID"], page["headers"]
    hparams = {info.get("displayName") or info["name"] for info in experiment["hparamInfos"]}
    assert hparams & set(page["headers"]), (hparams, page["headers"])
    metrics = [_metric_name(info) for info in experiment["metricInfos"]]
    assert set(metrics) & set(page["headers"]), (metrics, page["headers"])


def test_hparams_first_metric_column_is_validation_loss(browser, server, trained):
    """The HParams table's first metric column is the one the experiment config
    declares first, validation loss, and shows the run's final value."""
    _, result = trained
    page = _hparams_table(browser)
    experiment = server.post_json("/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = {info.get("displayName") or info["name"] for info in experiment["hparamInfos"]}
    columns = [h for h in page["headers"] if h not in ("Trial ID", "Show Metrics", *hparams)]
    assert columns, page["headers"]
    first = columns[0]
    assert first == _metric_name(experiment["metricInfos"][0]), (first, experiment["metricInfos"])
    assert "validation" in first.lower() and "loss" in first.lower(), (
        f"the first metric column is {first!r}, not validation loss (columns: {columns})"
    )
    values = [float(c) for c in page["cells"] if re.fullmatch(r"-?[0-9.]+(e[-+]?\d+)?", c)]
    final = result.history["val_loss"][-1]
    assert any(v == pytest.approx(final, rel=1e-3) for v in values), (final, page["cells"])


TEXT_JS = """
return deep(document, 'tf-text-loader').map((card) => ({
  run: card.run, tag: card.tag, text: deepText(card),
}));
"""


def test_text_dashboard_shows_the_flags(browser):
    browser.open("#text")
    cards = browser.wait_for(
        lambda: [
            card
            for card in browser.evaluate(TEXT_JS)
            if card["tag"] == "flags" and "num_examples" in card["text"]
        ],
        what="the flags text",
        screenshot="text",
    )
    browser.screenshot("05-text")
    [card] = cards
    assert card["run"] == RUN, card
    assert re.search(r"num_examples '?250", card["text"]), card["text"][:500]
    assert re.search(r"run_name '?" + RUN, card["text"]), card["text"][:500]


IMAGES_JS = """
return deep(document, 'tf-image-loader').map((card) => ({
  run: card.run,
  tag: card.tag,
  title: deepText(deep(card, 'tf-card-heading')[0] || card),
  images: deep(card, 'img').map((img) => [img.complete, img.naturalWidth, img.naturalHeight]),
}));
"""


def test_images_dashboard_shows_the_confusion_matrix(browser, server):
    run = f"{RUN}/validation"
    tags = [tag for tag in _plugin_tags(server, "images", run) if "confusion_matrix" in tag]
    assert tags, f"the run wrote no confusion_matrix image to {run} (eval figures: not yet?)"
    browser.open("#images")

    def loaded():
        cards = [
            card
            for card in browser.evaluate(IMAGES_JS)
            if card["run"] == run and "confusion_matrix" in card["tag"]
        ]
        ok = cards and all(any(c and w > 0 for c, w, _ in card["images"]) for card in cards)
        return cards if ok else None

    cards = browser.wait_for(loaded, what="the confusion matrix image", screenshot="images")
    browser.screenshot("06-images")
    assert {card["tag"] for card in cards} == set(tags), (cards, tags)
    for card in cards:
        [(_, width, height)] = card["images"]
        assert width >= 100 and height >= 100, card  # a figure, not an icon


PR_JS = """
const dashboard = deep(document, 'tf-pr-curve-dashboard')[0];
if (!dashboard) return null;
return {
  headings: deep(dashboard, 'tf-category-paginated-view')
    .map((view) => deepText(deep(view, '.heading')[0] || view)),
  cards: deep(dashboard, 'tf-pr-curve-card').map((card) => ({
    tag: card.tag,
    title: deepText(deep(card, 'tf-card-heading')[0] || card),
    drawn: deep(card, 'path.line').filter((p) => (p.getAttribute('d') || '').length > 20).length,
  })),
};
"""


def test_pr_curves_dashboard_has_a_card_per_tag(browser, server):
    run = f"{RUN}/validation"
    tags = sorted(t for t in _plugin_tags(server, "pr_curves", run) if t.startswith("pr_curve/"))
    assert tags, f"the run wrote no pr_curve/... summaries to {run} (eval figures: not yet?)"
    browser.open("#pr_curves")
    page_size = 12  # TensorBoard's cards per page in a category

    def drawn():
        page = browser.evaluate(PR_JS)
        if not page:
            return None
        cards = [card for card in page["cards"] if card["tag"].startswith("pr_curve/")]
        if len(cards) < min(len(tags), page_size) or not all(card["drawn"] for card in cards):
            return None
        return page

    page = browser.wait_for(drawn, what="the PR curves drawn", screenshot="pr_curves")
    browser.screenshot("07-pr-curves")
    shown = {card["tag"] for card in page["cards"]}
    assert shown <= set(tags) and len(shown) == min(len(tags), page_size), (shown, tags)
    # The category heading counts every tag, the ones on later pages too.
    heading = next(h for h in page["headings"] if h.startswith("pr_curve"))
    assert heading.split()[-1] == str(len(tags)), (heading, len(tags))


PROJECTOR_JS = """
const text = deepText(document.body);
return {
  tensors: /(\\d+) tensors? found/.exec(text)?.[1] || null,
  points: /Points:\\s*(\\d+)/.exec(text)?.[1] || null,
  dimension: /Dimension:\\s*(\\d+)/.exec(text)?.[1] || null,
  // Shown once PCA, the default projection, has placed the points.
  variance: /Total variance described:\\s*([\\d.]+)%/.exec(text)?.[1] || null,
  names: deep(document, 'vz-projector-data-panel')
    .flatMap((panel) => deep(panel, 'paper-dropdown-menu'))
    .map(deepText).filter((t) => /tensors? found/.test(t)),
};
"""


def test_projector_dashboard_shows_the_embeddings(browser, server, trained):
    _, result = trained
    configs = list(Path(result.run_dir).rglob("projector_config.pbtxt"))
    assert configs, f"the run wrote no projector_config.pbtxt under {result.run_dir} (not yet?)"
    browser.open("#projector")
    # The Projector is an iframe (plugin_entry.html) holding another (projector_binary.html).
    with browser.inside_frames("iframe", "iframe"):
        page = browser.wait_for(
            lambda: (page := browser.evaluate(PROJECTOR_JS)) and page["variance"] and page,
            what="the Projector's points placed by PCA",
            screenshot="projector",
        )
        browser.screenshot("08-projector")
    assert int(page["tensors"] or 0) >= 1, page
    assert int(page["points"]) == OPTIONS["num_words"] and int(page["dimension"]) >= 2, page
    assert float(page["variance"]) > 0, page
    assert any("embedding" in name for name in page["names"]), page
