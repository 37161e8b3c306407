"""Load and filter time of the run viewer (`persona-eval view`) on a big run, next to a bare page.

    python bench/view.py [--items 10000] [--repeat 3]

Builds the synthetic run of the viewer's tests (`tests/test_run_view.write_synthetic_run`) with
``--items`` items, writes its page, and loads it in headless Chromium (the DevTools driver of
`tests/test_leaderboard_html`) ``--repeat`` times, each in a fresh browser. The baseline is
measured in the same run: the same page bytes with the viewer's script swapped for one that only
parses the run's JSON, so it costs what any page of this size costs Chromium to read and parse.
Reported, as the median over the repeats: the viewer's load (navigation start to the first page
of items laid out), the baseline's load, their ratio, and the viewer's filter and first-search
times. Target: the viewer loads within 2x the bare page and filters in well under a second. On
the 2-core machine (Chromium 156), 10,000 items (a 37.5 MB page): the viewer 1381 ms, the bare
page 1196 ms (ratio 1.15), an outcome filter 130 ms, the first search 325 ms. The load is mostly
Chromium reading the file, which is why it is no unit test's business.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

BARE_SCRIPT = (
    "<script>(function(){var D=JSON.parse(document.getElementById('run-data').textContent);"
    "void document.body.offsetHeight;window.runView={items:D.items.id.length,"
    "timings:{load:performance.now()}};})();</script>"
)


def bare_page(page: Path, out: Path) -> Path:
    """The viewer's page with its script (and the CSP that pins it) replaced by a JSON.parse alone."""
    html = page.read_text(encoding="utf-8")
    html = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html, count=1)
    start = html.rindex("<script>")
    end = html.index("</script>", start) + len("</script>")
    out.write_text(html[:start] + BARE_SCRIPT + html[end:], encoding="utf-8")
    return out


def load_once(page: Path, profile: Path, filters: bool) -> dict[str, float]:
    from test_leaderboard_html import DevTools
    from test_run_view import _choose, _type

    browser = DevTools(profile)
    try:
        session = browser.open(page.as_uri())
        figures = {"load": browser.evaluate("window.runView.timings.load", session)}
        if filters:
            browser.evaluate(_choose("outcome-select", "u"), session)
            figures["filter"] = browser.evaluate("window.runView.timings.filter", session)
            browser.evaluate(_choose("outcome-select", ""), session)
            browser.evaluate(_type("SYN-0123 kitchen"), session)
            time.sleep(0.4)  # the search waits for a pause in typing on a big run
            figures["search"] = browser.evaluate("window.runView.timings.filters.at(-1)", session)["ms"]
        return figures
    finally:
        browser.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    from click.testing import CliRunner
    from test_run_view import write_synthetic_run

    from persona_eval.cli import _add_plugin_commands, cli

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        write_synthetic_run(run, args.items)
        _add_plugin_commands()
        started = time.perf_counter()
        outcome = CliRunner().invoke(cli, ["view", str(run)])
        built = time.perf_counter() - started
        if outcome.exit_code != 0:
            raise SystemExit(outcome.output)
        page = run / "view" / "index.html"
        bare = bare_page(page, Path(tmp) / "bare.html")
        viewer, baseline = [], []
        for i in range(args.repeat):
            baseline.append(load_once(bare, Path(tmp) / f"profile-bare-{i}", filters=False))
            viewer.append(load_once(page, Path(tmp) / f"profile-view-{i}", filters=True))
        med = {key: statistics.median(f[key] for f in viewer) for key in viewer[0]}
        bare_load = statistics.median(f["load"] for f in baseline)
        print(f"{args.items} items: page {page.stat().st_size / 1e6:.1f} MB, built in {built:.2f} s")
        print(f"viewer load {med['load']:.0f} ms · bare page {bare_load:.0f} ms · ratio {med['load'] / bare_load:.2f} "
              f"(target <= 2) · filter {med['filter']:.1f} ms · first search {med['search']:.1f} ms "
              f"(median of {args.repeat})")


if __name__ == "__main__":
    main()
