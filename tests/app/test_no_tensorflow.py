"""Pages that do not train never import TensorFlow: first paint must stay fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.app.conftest import ENTRY
from tests.fixtures.stores import ROOT, worker_env

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from streamlit.testing.v1 import AppTest

    export = open(sys.argv[1], "rb").read()
    shown = []
    for page in [None, "pages/instance.py", "pages/models.py", "pages/alerts.py", "pages/upload.py"]:
        at = AppTest.from_file(sys.argv[2], default_timeout=120)
        if page:
            at.switch_page(page)
        at.run()
        if page == "pages/upload.py":  # a parsed upload is plotted without touching the engine
            at.file_uploader(key="upload_file").set_value(("export.json", export, "application/json"))
            at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
        shown.append([page, len(at.get("plotly_chart")) + len(at.dataframe) + len(at.button)])
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tcn"))
    print(json.dumps({"shown": shown, "heavy": heavy}))
    """
)


def test_pages_render_without_importing_tensorflow(worker_db: Path, demo_export: bytes, tmp_path: Path) -> None:
    export = tmp_path / "export.json"
    export.write_bytes(demo_export)
    env = {**os.environ, **worker_env(worker_db), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(export), str(ENTRY)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(count > 0 for _, count in report["shown"]), report["shown"]  # every page drew its charts, tables or buttons
    assert report["heavy"] == [], f"pages imported {report['heavy'][:5]}"
