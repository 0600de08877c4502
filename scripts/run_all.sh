#!/usr/bin/env bash
# `make run`: the worker, the dashboard and the API together, on the demo source unless configured
# otherwise; Ctrl-C (or SIGTERM) stops all three.
set -uo pipefail
PY=.venv/bin/python
# The database path as the settings resolve it (environment, then headroom.toml); a bad setting stops here, in one line.
DB=$($PY -c '
import sys
from forecasting.settings import SettingsError, load_settings
try:
    print(load_settings().db)
except SettingsError as error:
    sys.exit(f"headroom: {error}")
') || exit 2
DASH_PORT=${HEADROOM_DASHBOARD_PORT:-8501}
API_PORT=${HEADROOM_API_PORT:-8000}
API_HOST=${HEADROOM_API_HOST:-127.0.0.1}
mkdir -p data/logs
pids=()
stop() {
  trap - INT TERM EXIT
  echo; echo "stopping Headroom..."
  kill -TERM "${pids[@]}" 2>/dev/null
  wait "${pids[@]}" 2>/dev/null
  exit 0
}
trap stop INT TERM EXIT

# Process substitution keeps $! the worker's own pid while its log also goes to the terminal.
$PY worker.py > >(tee -a data/logs/worker.log) 2>&1 &
pids+=($!)
$PY -m streamlit run streamlit_app.py --server.port "$DASH_PORT" >data/logs/dashboard.log 2>&1 &
pids+=($!)
$PY -m forecasting api --workers "${HEADROOM_API_WORKERS:-2}" >data/logs/api.log 2>&1 &
pids+=($!)
echo "Headroom is running on source=${HEADROOM_SOURCE:-demo}"
echo "  data:      $DB (logs in data/logs/)"
echo "  dashboard: http://127.0.0.1:$DASH_PORT"
echo "  API:       http://$API_HOST:$API_PORT  (docs at /docs)"
echo "Press Ctrl-C to stop."
wait
