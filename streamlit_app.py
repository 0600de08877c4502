"""Headroom's dashboard: ``streamlit run streamlit_app.py`` (or ``make dashboard``).

Lists every page of ``pages/`` explicitly (see ``app/nav.py``). No page trains or imports
TensorFlow on load; only the Upload page's Validate/Predict actions import the engine, lazily.
"""

import streamlit as st

from app import nav

st.set_page_config(page_title="Headroom", page_icon=":material/monitoring:", layout="wide")
nav.mark_entry()
st.navigation(nav.pages(), position="top").run()
