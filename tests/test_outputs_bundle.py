"""The output-checking bundle (pipeline/outputs.py): hand-made outputs with their statuses
worked out by hand, the layout read back by acro's own loader and compared with what acro's
own ``Records.finalise`` writes, SACRO's structural rules, byte-identical reruns, and the
project's manifest (pipeline/outputs.yaml) against the project's tables.

References: ACRO 1.0.2 (PyPI ``acro``; acro/record.py ``Records.finalise``, ``load_records``;
acro/summary.py; acro/default.yaml: safe_threshold 10, safe_dof_threshold 10, safe_nk_n 2,
safe_nk_k 0.9, safe_pratio_p 0.1). SACRO Viewer (github.com/AI-SDC/SACRO-Viewer, sacro/models.py
``ACROOutputs``): results.json must have "version" and "results", every result a non-empty
"files" list whose entries have a "name"; checksums/<name>.txt holds the file's SHA-256;
sdc "cells" are [row, column] pairs; sacro/settings.py ACRO_SUPPORTED_VERSION = "0.4.x".
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest

from pipeline import outputs
from pipeline.cli import InputError
from tests.conftest import ROOT

# A 1x1 PNG (any PNG bytes do: the stage copies them, it does not decode them).
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
TIMESTAMP = "2025-03-31T00:00:00"      # the extract date, as the stage stamps every output
IDENTIFIER = "b04efb7d7d6f0862"         # a (pseudonymised) family id planted in the summary
RULES = outputs.Rules()                 # 10, 10, 2, 0.9, 0.1: the pipeline's threshold, ACRO's defaults

TABLES = {
    # A cell below the threshold, suppressed: M's n was 9 (primary) and U's 16 (secondary), events
    # 4 and 8; published F 35 + 9 + 16 = 60 and 18 + 4 + 8 = 30. Two levels withheld per column,
    # so neither follows from the total: review (suppression applied), 4 withheld cells at
    # rows 2-3 (M, U), columns 2-3 (n, events).
    "suppressed.csv": "variable,level,n,events\nall,all,60,30\nsex,F,35,18\nsex,M,,\nsex,U,,\n",
    # Every count at least 10, nothing withheld: pass.
    "passes.csv": "variable,level,n,events\nall,all,50,20\nsex,F,30,10\nsex,M,20,10\n",
    # One level withheld: M's n = 40 - 31 = 9 and events = 20 - 12 = 8 follow by subtraction:
    # fail, cells (2, 2) and (2, 3).
    "one_withheld.csv": "variable,level,n,events\nall,all,40,20\nsex,F,31,12\nsex,M,,\n",
    # Counts below 10 left in: F's events 5 (row 1, col 3), M's n 7 and events 7 (row 2,
    # cols 2-3): fail (and the disclosure scan finds them too).
    "small_left_in.csv": "variable,level,n,events\nall,all,27,12\nsex,F,20,5\nsex,M,7,7\n",
    # Two models of 3 coefficients: 12 events - 3 = 9 residual df < 10 fails; 13 - 3 = 10 passes
    # (ACRO fails only dof < threshold).
    "model_few.csv": "covariate,coef,hr\nx1,0.1,1.105\nx2,0.2,1.221\nx3,-0.1,0.905\n",
    "model_enough.csv": "covariate,coef,hr\nx1,0.1,1.105\nx2,0.2,1.221\nx3,-0.1,0.905\n",
    # A curve: 100 -> 95 (5 leave the risk set: row 1 flagged), 95 -> 80 (15), then a withheld
    # count (row 3, skipped), 80 -> 60 (20): 3 steps, 1 below 10: review; the withheld cell
    # (3, 3) is review too.
    "curve.csv": "time_months,series,share,at_risk\n0,km,0,100\n1,km,0.05,95\n2,km,0.2,80\n3,km,0.3,withheld\n"
                 "4,km,0.35,60\n",
    # Magnitudes: sums of predicted risks (each at most 1). Tenth 1 totals 2.05: the largest two
    # could be 2 of 2.05 = 98% >= 90% (N-k) and (2.05 - 2) / 1 = 5% < 10% (p-ratio): both
    # review at (0, 2). Tenth 2 totals 30.5: 2 / 30.5 = 7% and 30.5 >= 2.1: pass.
    "deciles.csv": "tenth,n,expected_events\n1,12,2.05\n2,40,30.5\n",
    # Confusion counts: row b withholds all four cells and flagged (n published; no single part
    # missing from any sum); row c withholds only tp, which is n - fp - fn - tn = 100 - 10 - 20 -
    # 50 = 20: fail at (2, 4). Withheld cells: 5 in row b + 1 in row c = 6.
    "confusion.csv": "rule,n,flagged,events,tp,fp,fn,tn\na,100,30,40,20,10,20,50\nb,100,,40,,,,\n"
                     "c,100,30,40,,10,20,50\n",
    # Kept inside: must not appear in the bundle.
    "daily.csv": "time_days,at_risk\n1,100\n2,99\n",
}

MANIFEST = {
    "folders": ["reports/stage"],
    "command": {"reports/stage": "python -m pipeline.stage", "reports": "python -m pipeline.report"},
    "tables": [
        {"file": "reports/stage/suppressed.csv", "analysis": "FrequencyTable",
         "partition": {"within": ["variable"], "level": "level"}, "description": "suppressed by the stage"},
        {"file": "reports/stage/passes.csv", "analysis": "FrequencyTable",
         "partition": {"within": ["variable"], "level": "level"}},
        {"file": "reports/stage/one_withheld.csv", "analysis": "FrequencyTable",
         "partition": {"within": ["variable"], "level": "level"}},
        {"file": "reports/stage/small_left_in.csv", "analysis": "FrequencyTable"},
        {"file": "reports/stage/model_few.csv", "type": "regression", "analysis": "HazardRatio",
         "model": {"method": "cox", "observations": "metrics/model.json:few.events", "parameters": "rows"}},
        {"file": "reports/stage/model_enough.csv", "type": "regression", "analysis": "HazardRatio",
         "model": {"method": "cox", "observations": "metrics/model.json:enough.events", "parameters": "rows"}},
        {"file": "reports/stage/curve.csv", "analysis": "KaplanMeier", "curve": {"by": ["series"], "at_risk": "at_risk"}},
        {"file": "reports/stage/deciles.csv", "analysis": "Sum", "magnitudes": {"expected_events": 1},
         "magnitudes_unbounded_when": {"logistic.censoring": "ipcw"}},
        {"file": "reports/stage/confusion.csv", "analysis": "FrequencyTable",
         "row_sums": [{"total": "n", "parts": ["tp", "fp", "fn", "tn"]}, {"total": "flagged", "parts": ["tp", "fp"]},
                      {"total": "events", "parts": ["tp", "fn"]}]},
        {"file": "reports/stage/folds.csv", "analysis": "FrequencyTable"},      # not made: absent
    ],
    "kept_inside": {"reports/stage/daily.csv": "one row per day"},
    "figures": [
        {"alt": "^Kaplan-Meier cumulative ", "name": "figure_km", "type": "survival plot", "data": ["stage_one_withheld"]},
        {"alt": "^Decision curve$", "name": "figure_decision_curve", "data": ["stage_passes"]},
    ],
    "texts": [{"file": "reports/summary.md", "name": "summary", "description": "the summary"}],
}

EXPECTED_STATUS = {
    "stage_suppressed": "review", "stage_passes": "pass", "stage_one_withheld": "fail", "stage_small_left_in": "fail",
    "stage_model_few": "fail", "stage_model_enough": "pass", "stage_curve": "review", "stage_deciles": "review",
    "stage_confusion": "fail",
    "figure_km": "fail",                      # draws stage_one_withheld, which fails
    "figure_decision_curve": "review",        # a figure: review at least
    "figure_something_new_odd": "review",     # a figure the manifest does not name
    "summary": "fail",                        # the planted identifier
    "2ndary_risk_summary_json-DONT_RELEASE": "review", "2ndary_risk_summary_csv-DONT_RELEASE": "review",
}


def make_project(root: Path) -> None:
    (root / "reports/stage").mkdir(parents=True)
    (root / "metrics").mkdir()
    for name, text in TABLES.items():
        (root / "reports/stage" / name).write_text(text)
    (root / "metrics/model.json").write_text(json.dumps({"few": {"events": 12}, "enough": {"events": 13}}))
    png = base64.b64encode(PNG).decode()
    (root / "reports/report.html").write_text(
        "<html><body><p>x</p>"
        f"<img alt='Kaplan-Meier cumulative re-referral' src='data:image/png;base64,{png}'>"
        f"<img alt='Decision curve' src='data:image/png;base64,{png}'>"
        f"<img alt='Something new &amp; odd' src='data:image/png;base64,{png}'></body></html>")
    (root / "reports/summary.md").write_text(f"# Summary\n\nFamily {IDENTIFIER} appears here by mistake.\n")


def build(root: Path, folder: Path, params: dict | None = None) -> tuple[list[outputs.Output], list[str], dict]:
    found, absent = outputs.collect(root, MANIFEST, RULES, params or {"logistic": {"censoring": "exclude"}})
    scanned = outputs.write_bundle(found, folder, TIMESTAMP, {IDENTIFIER, "C0000001"}, RULES.min_count)
    return found, absent, scanned


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> tuple[Path, list[str], dict]:
    root = tmp_path_factory.mktemp("project")
    make_project(root)
    _, absent, scanned = build(root, root / "reports/outputs")
    return root / "reports/outputs", absent, scanned


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())["results"]


def check(entry: dict, name: str) -> str:
    return entry["fair"]["check_status"][name]


def test_statuses_worked_out_by_hand(bundle):
    folder, absent, _ = bundle
    got = {uid: e["status"] for uid, e in results(folder).items()}
    assert got == EXPECTED_STATUS
    assert list(got)[:9] == [f"stage_{Path(t['file']).stem}" for t in MANIFEST["tables"][:9]]   # manifest order
    assert absent == ["reports/stage/folds.csv"]
    assert not (folder / "stage_daily.csv").exists() and not (folder / "daily.csv").exists()


def test_suppressed_table_is_review_with_its_withheld_cells(bundle):
    e = results(bundle[0])["stage_suppressed"]
    assert check(e, "MinimumThresholdCheck") == "pass" and check(e, "SecondarySuppressionCheck") == "pass"
    assert check(e, "WithheldByPipeline") == "review"
    assert e["files"][0]["sdc"] == {"summary": {"WithheldByPipeline": 4},
                                    "cells": {"WithheldByPipeline": [[2, 2], [2, 3], [3, 2], [3, 3]]}}
    assert e["exception"].startswith("Suppression automatically applied where needed: 4 count cell(s) withheld")
    # ACRO's outcome: the flagged rows only, each cell "ok" or the checks' names
    assert e["outcome"] == {"variable": {"2": "ok", "3": "ok"}, "level": {"2": "ok", "3": "ok"},
                            "n": {"2": "WithheldByPipeline; ", "3": "WithheldByPipeline; "},
                            "events": {"2": "WithheldByPipeline; ", "3": "WithheldByPipeline; "}}
    assert e["comments"] == ["suppressed by the stage"] and e["command"] == "python -m pipeline.stage"
    assert e["properties"] == {"source": "reports/stage/suppressed.csv"} and e["type"] == "table"
    assert e["fair"]["independent"] == ["sex"] and e["timestamp"] == TIMESTAMP


def test_passing_table_has_no_flag(bundle):
    e = results(bundle[0])["stage_passes"]
    assert {k: v for k, v in e["fair"]["check_status"].items() if v != "not applicable"} == {
        "MinimumThresholdCheck": "pass", "WithheldByPipeline": "pass", "SecondarySuppressionCheck": "pass",
        "DisclosureScan": "pass"}
    assert e["files"][0]["sdc"] == {"summary": {}, "cells": {}} and e["outcome"] == {} and e["exception"] == ""
    assert "NKCheck: not applicable: counts and estimates" in e["summary"]
    assert e["summary"].startswith("FrequencyTable : \nMinimumThresholdCheck: pass - no count below 10")


def test_single_withheld_level_fails_secondary_suppression(bundle):
    e = results(bundle[0])["stage_one_withheld"]
    assert check(e, "SecondarySuppressionCheck") == "fail"
    assert e["files"][0]["sdc"]["cells"]["SecondarySuppressionCheck"] == [[2, 2], [2, 3]]
    assert "n of level=M (variable=sex) is the only one withheld" in e["summary"]


def test_small_counts_left_in_fail_threshold_and_scan(bundle):
    e = results(bundle[0])["stage_small_left_in"]
    assert check(e, "MinimumThresholdCheck") == "fail" and check(e, "DisclosureScan") == "fail"
    assert e["files"][0]["sdc"]["cells"]["MinimumThresholdCheck"] == [[1, 3], [2, 2], [2, 3]]   # row by row
    assert "3 count(s) below 10 not withheld (first: CSV line 3, column events;" in e["summary"]


def test_residual_degrees_of_freedom(bundle):
    few, enough = results(bundle[0])["stage_model_few"], results(bundle[0])["stage_model_enough"]
    assert few["type"] == "regression" and few["properties"]["dof"] == 9 and check(few, "MinimumDoFCheck") == "fail"
    assert "MinimumDoFCheck: fail - dof=9 < 10" in few["summary"]
    assert enough["properties"] == {"method": "cox", "dof": 10, "source": "reports/stage/model_enough.csv"}
    assert check(enough, "MinimumDoFCheck") == "pass" and "pass dof=10 >= 10" in enough["summary"]
    assert few["fair"]["independent"] == ["x1", "x2", "x3"]


def test_dof_from_metrics_withheld_absent_and_extra(tmp_path):
    """Observations withheld (null: fewer than 10) with 3 parameters: at most 10 - 1 - 3 = 6 <
    10: fail. Not recorded: review. 100 events - 3 rows - 16.2 frailty df = 80.8 -> 80."""
    (tmp_path / "m.json").write_text(json.dumps({"a": {"events": None, "df": 16.2}, "b": {"events": 100}}))
    (tmp_path / "t.csv").write_text(TABLES["model_few.csv"])
    table = pd.read_csv(tmp_path / "t.csv")

    def spec(observations: str, extra: str | None = None) -> dict:
        return {"model": {"method": "m", "observations": observations, "extra_parameters": extra}}

    assert outputs.dof_check(table, spec("m.json:a.events"), RULES, tmp_path)[0].outcome == "fail"
    assert "residual df at most 6" in outputs.dof_check(table, spec("m.json:a.events"), RULES, tmp_path)[0].detail
    assert outputs.dof_check(table, spec("m.json:c.events"), RULES, tmp_path)[0].outcome == "review"
    got = outputs.dof_check(table, spec("m.json:b.events", "m.json:a.df"), RULES, tmp_path)
    assert got[0].outcome == "pass" and got[1] == 80


def test_curve_steps_below_threshold_are_review(bundle):
    e = results(bundle[0])["stage_curve"]
    assert check(e, "SurvivalStepCheck") == "review" and check(e, "MinimumThresholdCheck") == "pass"
    assert e["files"][0]["sdc"]["cells"] == {"WithheldByPipeline": [[3, 3]], "SurvivalStepCheck": [[1, 3]]}
    assert "at 1 of 3 steps" in e["summary"]


def test_dominance_by_bound(bundle, tmp_path):
    e = results(bundle[0])["stage_deciles"]
    assert check(e, "NKCheck") == "review" and check(e, "PPercentCheck") == "review"
    assert e["files"][0]["sdc"]["cells"] == {"NKCheck": [[0, 2]], "PPercentCheck": [[0, 2]]}
    table = pd.DataFrame({"tenth": [1, 2], "expected_events": [30.5, 40.0]})
    spec = MANIFEST["tables"][7]
    assert [c.outcome for c in outputs.dominance_checks(table, spec, RULES, {"logistic": {"censoring": "exclude"}})] == [
        "pass", "pass"]
    weighted = outputs.dominance_checks(table, spec, RULES, {"logistic": {"censoring": "ipcw"}})   # bound gone
    assert [c.outcome for c in weighted] == ["review", "review"] and "logistic.censoring: ipcw" in weighted[0].detail


def test_row_sums_catch_a_single_withheld_part(bundle):
    e = results(bundle[0])["stage_confusion"]
    assert check(e, "SecondarySuppressionCheck") == "fail"
    assert e["files"][0]["sdc"]["cells"]["SecondarySuppressionCheck"] == [[2, 4]]
    assert e["files"][0]["sdc"]["summary"]["WithheldByPipeline"] == 6
    assert "CSV line 4: tp = n - the other parts" in e["summary"]


def test_figures_and_text(bundle):
    folder, _, scanned = bundle
    r = results(folder)
    assert r["figure_km"]["type"] == "survival plot" and (folder / "figure_km.png").read_bytes() == PNG
    assert "stage_one_withheld (fail)" in r["figure_km"]["summary"]
    assert r["figure_decision_curve"]["type"] == "custom" and r["figure_something_new_odd"]["files"] == [
        {"name": "figure_something_new_odd.png", "sdc": {"summary": {}, "cells": {}}}]
    assert check(r["figure_km"], "DisclosureScan") == "not applicable"
    assert check(r["summary"], "DisclosureScan") == "fail"
    assert "identifier(s) of the input (1 shown; not repeated here)" in r["summary"]["summary"]
    # what the scan found is never repeated: results.json and the metrics leave the environment too
    assert IDENTIFIER not in (folder / "results.json").read_text() and IDENTIFIER not in json.dumps(scanned)
    assert "(7)" not in json.dumps(scanned) and "= 7" not in (folder / "results.json").read_text()
    assert r["summary"]["command"] == "python -m pipeline.report"
    # the bundle's own scan: the summary's identifier and the small counts, nothing from results.json
    assert len(scanned["problems"]) == 3       # the identifier; small n and small events (one line per column)
    assert any(p.endswith("summary.md: identifier(s) of the input (1 shown; not repeated here)")
               for p in scanned["problems"])
    assert any("stage_small_left_in.csv" in p for p in scanned["problems"])


def test_unlisted_table_stops_the_stage(tmp_path):
    make_project(tmp_path)
    (tmp_path / "reports/stage/new_table.csv").write_text("n\n50\n")
    with pytest.raises(InputError, match=r"reports/stage/new_table.csv: neither released nor kept inside"):
        outputs.collect(tmp_path, MANIFEST, RULES, {})
    (tmp_path / "reports/stage/new_table.csv").unlink()
    (tmp_path / "reports/stage/notes.txt").write_text("any file, not only a table\n")
    with pytest.raises(InputError, match=r"reports/stage/notes.txt: neither released nor kept inside"):
        outputs.collect(tmp_path, MANIFEST, RULES, {})


def test_checksums_and_sacro_structure(bundle):
    """SACRO Viewer's rules (sacro/models.py): version and results; every result has files,
    each with a name; checksums/<name>.txt equals the file's SHA-256; cells are pairs."""
    folder = bundle[0]
    doc = json.loads((folder / "results.json").read_text())
    assert doc["version"] == "1.0.2" and tuple(map(int, doc["version"].split(".")[:2])) >= (0, 4)
    for uid, entry in doc["results"].items():
        assert entry["uid"] == uid and entry["files"], uid
        for f in entry["files"]:
            assert (folder / f["name"]).is_file()
            assert (folder / "checksums" / f"{f['name']}.txt").read_text() == hashlib.sha256(
                (folder / f["name"]).read_bytes()).hexdigest()
            assert all(len(cell) == 2 for cells in f["sdc"].get("cells", {}).values() for cell in cells)
    top = {p.name for p in folder.iterdir() if p.is_file()}
    assert {p.name for p in (folder / "checksums").iterdir()} == {f"{n}.txt" for n in top}
    assert "results.json" in top and "session_summary.json" in top


def test_acro_loads_the_bundle(bundle):
    """acro's own loader (acro.record.load_records) reads results.json back: every field as
    written, each table as the CSV it names, each figure as its file name."""
    from acro.record import load_records

    folder = bundle[0]
    written = results(folder)
    records = load_records(str(folder))
    assert records.get_keys() == list(written)
    for uid, e in written.items():
        r = records.get(uid)
        assert (r.status, r.output_type, r.properties, r.command, r.summary, r.timestamp, r.comments, r.exception,
                r.fair) == (e["status"], e["type"], e["properties"], e["command"], e["summary"], e["timestamp"],
                            e["comments"], e["exception"], e["fair"])
        assert r.sdc == e["files"][0]["sdc"]
        assert r.outcome.equals(pd.DataFrame.from_dict(e["outcome"]))
        name = e["files"][0]["name"]
        if name.endswith(".csv"):
            pd.testing.assert_frame_equal(r.output[0], pd.read_csv(folder / name))
        else:
            assert r.output == [name]


def test_layout_equals_what_acro_finalise_writes(bundle, tmp_path, monkeypatch):
    """Build a small session with acro itself (a table and a custom file), finalise it, and
    compare the structure with ours: file set, key order of every level, the session
    summary's custom outputs, the checksums, the JSON formatting."""
    from acro.record import Records

    folder = bundle[0]
    monkeypatch.chdir(tmp_path)             # finalise removes ./acro_artifacts if present
    (tmp_path / "plot.png").write_bytes(PNG)
    records = Records()
    records.add(status="review", output_type="table", properties={"method": "crosstab"},
                sdc={"summary": {"MinimumThresholdCheck": 1}, "cells": {"MinimumThresholdCheck": [[0, 1]]}},
                fair={"analysis_name": "Crosstabs"}, command="acro.crosstab(...)", summary="Crosstabs : ",
                outcome=pd.DataFrame({"a": ["ok"], "b": ["MinimumThresholdCheck; "]}),
                output=[pd.DataFrame({"a": [10], "b": [3]})])
    records.add_custom(str(tmp_path / "plot.png"))
    records.finalise(str(tmp_path / "acro_out"), "json")
    theirs_dir = tmp_path / "acro_out"
    theirs = json.loads((theirs_dir / "results.json").read_text())
    ours = json.loads((folder / "results.json").read_text())
    assert list(ours) == list(theirs) == ["version", "tool", "results"]
    assert ours["version"] == theirs["version"] and list(ours["tool"]) == list(theirs["tool"])
    table, custom = theirs["results"]["output_0"], theirs["results"]["output_1"]
    assert list(ours["results"]["stage_suppressed"]) == list(table) == list(custom)
    assert list(ours["results"]["figure_decision_curve"]) == list(custom)
    assert list(ours["results"]["stage_suppressed"]["files"][0]) == list(table["files"][0]) == ["name", "sdc"]
    assert list(ours["results"]["stage_suppressed"]["files"][0]["sdc"]) == list(table["files"][0]["sdc"])
    for key in outputs.SUMMARY_KEYS.values():       # the two session-summary outputs, field for field
        mine, acros = dict(ours["results"][key]), dict(theirs["results"][key])
        assert mine.pop("timestamp") == TIMESTAMP and re.match(r"\d{4}-\d\d-\d\dT", acros.pop("timestamp"))
        assert mine == acros
    # the same files beside results.json, and a checksum for each (results.json's too)
    assert {p.name for p in theirs_dir.iterdir()} == {"output_0_0.csv", "plot.png", "results.json",
                                                       "session_summary.json", "session_summary.csv", "checksums"}
    assert {p.name for p in (theirs_dir / "checksums").iterdir()} == {
        f"{p.name}.txt" for p in theirs_dir.iterdir() if p.is_file()}
    # the session summary: same sections and keys, same CSV header and CRLF line ends
    s_ours = json.loads((folder / "session_summary.json").read_text())
    s_theirs = json.loads((theirs_dir / "session_summary.json").read_text())
    assert list(s_ours) == list(s_theirs) and list(s_ours["metadata"]) == list(s_theirs["metadata"])
    assert list(s_ours["outputs"][0]) == list(s_theirs["outputs"][0])
    assert s_ours["metadata"]["timestamp"] == TIMESTAMP and s_ours["metadata"]["total_outputs"] == 13
    head_ours = (folder / "session_summary.csv").read_bytes().split(b"\r\n")[0].split(b",")[:5]
    assert head_ours == (theirs_dir / "session_summary.csv").read_bytes().split(b"\r\n")[0].split(b",")[:5]
    # json.dump(indent=4), no trailing newline, as acro writes it
    assert (folder / "results.json").read_text()[:30] == (theirs_dir / "results.json").read_text()[:30]
    assert not (folder / "results.json").read_text().endswith("\n")


def test_rerun_is_byte_identical(bundle, tmp_path):
    root = tmp_path / "p"
    root.mkdir()
    make_project(root)
    build(root, tmp_path / "again")
    first = {p.relative_to(bundle[0]): p.read_bytes() for p in sorted(bundle[0].rglob("*")) if p.is_file()}
    second = {p.relative_to(tmp_path / "again"): p.read_bytes() for p in sorted((tmp_path / "again").rglob("*"))
              if p.is_file()}
    assert first == second and len(first) == 2 * 16     # 13 outputs + results.json + 2 session files, and a checksum each


def test_project_manifest_covers_the_project():
    """pipeline/outputs.yaml: loads, lists every file the stages wrote (committed under
    reports/), releases every file the report reads, names analyses of ACRO's ontology, and
    links each figure to released tables."""
    manifest = outputs.load_manifest()
    assert outputs.unlisted_files(ROOT, manifest) == []
    released = {t["file"] for t in manifest["tables"] + manifest["texts"]}
    read_by_report = set(re.findall(r"reports/[a-z_]+/[a-z_]+\.(?:csv|json|txt)", (ROOT / "pipeline/report.py").read_text()))
    assert len(read_by_report) > 15 and read_by_report <= released, read_by_report - released
    ontology = json.loads(resources.files("acro").joinpath("analyses.json").read_text(encoding="utf-8"))
    assert {t["analysis"] for t in manifest["tables"]} <= set(ontology)
    names = {outputs.table_name(t) for t in manifest["tables"]}
    assert names.isdisjoint(t["name"] for t in manifest["texts"])
    assert {d for f in manifest["figures"] for d in f["data"]} <= names
    assert not set(manifest["kept_inside"]) & released
