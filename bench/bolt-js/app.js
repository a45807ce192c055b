// The baseline for bench/ack.sh: Slack's official Bolt for JavaScript (HTTPReceiver)
// answering the same signed `/release status` slash command.
// Authorization is answered locally, so no request leaves the machine.
const { App } = require("@slack/bolt");

const app = new App({
  signingSecret: process.env.SLACK_SIGNING_SECRET,
  authorize: async () => ({ botToken: "xoxb-bench", botUserId: "U0BOT", botId: "B0BOT" }),
});

app.command("/release", async ({ ack }) => {
  await ack({ response_type: "ephemeral", text: "No release is running.\nReleases are not blocked." });
});

(async () => {
  await app.start(Number(process.env.BOLT_PORT));
})();
