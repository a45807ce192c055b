"""The baseline for bench/ack.sh: Slack's official Bolt for Python answering the same
signed `/release status` slash command with its built-in HTTP server.

Authorization is answered locally (no auth.test round trip to Slack), so the figure is
Bolt's own request handling: signature check, parsing, listener, ack."""
import os

from slack_bolt import App
from slack_bolt.authorization import AuthorizeResult


def authorize(enterprise_id, team_id, user_id):
    return AuthorizeResult(
        enterprise_id=enterprise_id,
        team_id=team_id,
        bot_token="xoxb-bench",
        bot_user_id="U0BOT",
        bot_id="B0BOT",
    )


app = App(signing_secret=os.environ["SLACK_SIGNING_SECRET"], authorize=authorize)


@app.command("/release")
def release(ack, command):
    ack(response_type="ephemeral", text="No release is running.\nReleases are not blocked.")


if __name__ == "__main__":
    app.start(port=int(os.environ["BOLT_PORT"]))
