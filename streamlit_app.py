"""Headroom's dashboard: ``streamlit run streamlit_app.py`` (or ``make dashboard``).

Lists every page of ``pages/`` explicitly. No page here trains or imports TensorFlow
on load; only the Upload page's Validate/Predict actions import the engine, lazily.
"""

import streamlit as st

st.set_page_config(page_title="Headroom", page_icon="📈", layout="wide")

PAGES = [
    st.Page("pages/fleet.py", title="Fleet", icon=":material/dns:", url_path="fleet", default=True),
    st.Page("pages/instance.py", title="Instance", icon=":material/monitoring:", url_path="instance"),
    st.Page("pages/models.py", title="Models", icon=":material/model_training:", url_path="models"),
    st.Page("pages/alerts.py", title="Alerts", icon=":material/notifications:", url_path="alerts"),
    st.Page("pages/upload.py", title="Upload", icon=":material/upload_file:", url_path="upload"),
]

st.navigation(PAGES, position="top").run()
