"""The dashboard's pages, listed once for the entry script, and the guard that keeps deep links working.

Streamlit treats an app with a ``pages/`` folder the old way (each file run on its own, a
sidebar built from file names) until ``st.navigation`` has been called once in the server's
life. So a first visit straight to ``/instance?instance=...`` on a freshly started server
would run that page without the entry script. Every page calls :func:`require_entry` first:
when the entry did not run, it registers the pages with ``st.navigation`` (which switches
Streamlit to this app's navigation for good) and re-runs, landing on the same page and URL.
"""

from __future__ import annotations

import streamlit as st

ENTRY_MARK = "_headroom_entry"


def pages() -> list[st.Page]:
    """Every page, in menu order; Fleet is the home page."""
    return [
        st.Page("pages/fleet.py", title="Fleet", icon=":material/dns:", url_path="fleet", default=True),
        st.Page("pages/instance.py", title="Instance", icon=":material/monitoring:", url_path="instance"),
        st.Page("pages/models.py", title="Models", icon=":material/model_training:", url_path="models"),
        st.Page("pages/alerts.py", title="Alerts", icon=":material/notifications:", url_path="alerts"),
        st.Page("pages/upload.py", title="Upload", icon=":material/upload_file:", url_path="upload"),
    ]


def mark_entry() -> None:
    """Called by the entry script before it runs a page."""
    st.session_state[ENTRY_MARK] = True


def require_entry() -> None:
    """Re-run through the entry script when Streamlit ran this page file on its own (see the module doc)."""
    if not st.session_state.get(ENTRY_MARK):
        st.navigation(pages(), position="hidden")
        st.rerun()
