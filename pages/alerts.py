"""Alerts: open and past early warnings with their outcome and lead time; email settings and a test message."""

from __future__ import annotations

import math

import streamlit as st

from app import data, nav, ui
from app.alert_table import OUTCOMES, alert_table, outcome_summary
from app.format import utc_text

nav.require_entry()
config = data.settings()
db = data.db_key(config)
st.title("Alerts")


COLUMN_CONFIG = {
    "lead": st.column_config.NumberColumn(
        "lead (min)", format="%.0f", help="minutes between the warning and the real crossing (predicted lead while none happened)"
    ),
    "peak": st.column_config.NumberColumn("predicted peak", format="%.0f %%"),
    "threshold": st.column_config.NumberColumn("limit", format="%.0f %%"),
    "link": st.column_config.LinkColumn("instance page", display_text="open"),
}


@st.fragment(run_every=data.REFRESH_SECONDS)
def live() -> None:
    """Open alerts first (with links to their instances), then the past ones with their outcome."""
    if db is None:
        ui.no_data_help(config)
        return
    alerts = data.load_alerts(db)
    if alerts.empty:
        st.success(
            "**No alerts.** No instance has been predicted to cross its CPU limit so far; "
            "alerts open here (and by email, if configured) as soon as a forecast crosses.",
            icon=":material/check_circle:",
        )
        return
    shown = alert_table(alerts)
    open_ = shown[shown["state"] == "open"]
    past = shown[shown["state"] != "open"]
    st.subheader(f"Open ({len(open_)})")
    if open_.empty:
        st.caption("No open alerts right now.")
    else:
        for row in open_.itertuples():
            st.page_link(
                ui.INSTANCE_PAGE,
                icon=":material/notifications_active:",
                query_params={"instance": row.instance_id},
                label=f"{row.name} ({row.instance_id}): predicted to reach {row.peak:.0f} % "
                f"(limit {row.threshold:.0f} %) at {utc_text(row.crossing_ts)}",
            )
        st.dataframe(
            open_[
                [
                    "name",
                    "instance_id",
                    "opened",
                    "predicted crossing",
                    "lead",
                    "peak",
                    "threshold",
                    "model",
                    "basis",
                    "emailed",
                    "link",
                ]
            ],
            hide_index=True,
            placeholder="—",
            column_config=COLUMN_CONFIG,
            key="open_alerts",
        )
    st.subheader(f"Past ({len(past)})")
    if past.empty:
        st.caption("No cleared alerts yet.")
    else:
        summary = outcome_summary(past)
        cols = st.columns(4)
        for col, label in zip(cols, OUTCOMES.values(), strict=False):
            col.metric(label, int(summary[label]))
        lead = summary["median lead"]
        cols[3].metric("median lead (caught)", "—" if math.isnan(lead) else f"{lead:.0f} min")
        st.dataframe(
            past[
                [
                    "name",
                    "instance_id",
                    "outcome",
                    "opened",
                    "cleared",
                    "predicted crossing",
                    "lead",
                    "peak",
                    "threshold",
                    "model",
                    "link",
                ]
            ],
            hide_index=True,
            placeholder="—",
            column_config=COLUMN_CONFIG,
            key="past_alerts",
        )


live()

st.header("Email")
password = (
    "set"
    if config.smtp_password is not None and config.smtp_password.get_secret_value()
    else "not in the environment (the mailer also looks in the system keyring)"
)
if config.smtp_host:
    st.markdown(
        f"- server: `{config.smtp_host}:{config.smtp_port or 'default port'}` ({config.smtp_tls})\n"
        f"- user: `{config.smtp_user or '—'}`, password: {password}\n"
        f"- from `{config.mail_from}` to {', '.join(f'`{a}`' for a in config.mail_to) or '**nobody** (set HEADROOM_MAIL_TO)'}\n"
        f"- cooldown between mails for one instance: {config.alert_cooldown:.0f} min; digest every {config.digest_every:.0f} h"
    )
else:
    st.info(
        "Email is off: set `HEADROOM_SMTP_HOST` and `HEADROOM_MAIL_TO` (and `HEADROOM_SMTP_USER`, with the password in "
        "`HEADROOM_SMTP_PASSWORD` or the system keyring) to receive alerts and the daily digest."
    )
if st.button("Send test email", key="test_mail", help="sends one message with the settings above"):
    from forecasting.notify import send_test_mail  # lazily: only this button needs the mailer

    with st.spinner("sending..."):
        ok, message = send_test_mail(config)
    (st.success if ok else st.error)(message)
