"""The synthetic sweep follows docs/records.md: same files, same columns, same types."""

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import synth

RECORDS = Path(__file__).resolve().parents[2] / "docs" / "records.md"
TYPES = {"int16": pa.int16(), "int32": pa.int32(), "float64": pa.float64(),
         "string": pa.string()}


def _documented(section: str) -> dict[str, pa.DataType]:
    """Column -> type of one `## <section>` table of docs/records.md."""
    text = RECORDS.read_text()
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \|", body, flags=re.M)
    return {name: TYPES[t] for name, t in rows}


@pytest.mark.parametrize("kind, schema", [("turns.parquet", synth.TURNS_SCHEMA),
                                          ("jobs.parquet", synth.JOBS_SCHEMA),
                                          ("metrics.parquet", synth.METRICS_SCHEMA)])
def test_schemas_match_records_md(kind, schema):
    doc = _documented(kind)
    assert doc, f"no table for {kind} in {RECORDS}"
    assert {f.name: f.type for f in schema} == doc


def test_written_cell_follows_the_layout(tmp_path):
    spec = synth.SynthSpec(gpus=("h100",), drams=(64,), policies=("fcfs",), jps=(3.0,),
                           n_jobs=5, n_turns=4)
    sweep = synth.build(spec, tmp_path)
    cell = sweep / "gpu=h100" / "dram=64" / "policy=fcfs" / "sched=fcfs" / "jps=3"
    names = {p.name for p in cell.iterdir()}
    assert {"turns.parquet", "jobs.parquet", "metrics.parquet", "manifest.json", "DONE"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert pq.read_table(cell / "turns.parquet").num_rows == 20
    assert (sweep / "sweep.json").is_file()


def test_turn_rows_sizing():
    spec = synth.spec_for_turn_rows(1_000_000)
    assert abs(len(spec.cells()) * spec.n_jobs * spec.n_turns - 1_000_000) < 500


def test_unknown_fault_is_refused(tmp_path):
    with pytest.raises(ValueError, match="allowed"):
        synth.build(synth.SynthSpec(faults={("h100", 64, "fcfs", 1.0): "melted"}), tmp_path)
