"""The reproduction report: what each seed claims (claims.yaml) beside what the pipeline measured (metrics/<id>/).

Every measured number comes from the metrics files the train and evaluate stages wrote; the
only numbers in claims.yaml are the seeds' own. Results on the quick budget are also held to their floors
(params.yaml `quick_floors`), and the ones below them are marked.

Modules: `claims` (claims.yaml), `floors` (quick-budget floors), `rows` (the experiments' table, Markdown and
CSV), `sections` (studies, searches, transfer learning), `chart` (the figure) and `text` (Markdown helpers).
"""

from cnnlab.report.chart import claims_chart
from cnnlab.report.claims import Claims, load_claims
from cnnlab.report.floors import floor_metrics, floor_section
from cnnlab.report.rows import build_rows, markdown, to_csv
from cnnlab.report.sections import floor_checks, search_section, seed_main_effects, study_section, transfer_section

__all__ = [
    "Claims",
    "build_rows",
    "claims_chart",
    "floor_checks",
    "floor_metrics",
    "floor_section",
    "load_claims",
    "markdown",
    "search_section",
    "seed_main_effects",
    "study_section",
    "to_csv",
    "transfer_section",
]
