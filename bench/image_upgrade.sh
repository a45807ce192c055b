#!/bin/sh
# Figures for /upgrade image (issue 4). Release mode; prints wall time against
# rancher-service-updater's serial N x wait and against its own floor (one upgrade, or
# requests / rate limit), Rancher requests per service, Slack messages, peak RSS.
# Usage: bench/image_upgrade.sh   (takes about a minute: a 10-service serial sample + the 200-service run)
set -eu
cd "$(dirname "$0")/.."
cargo bench --bench image_upgrade "$@"
