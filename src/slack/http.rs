//! Slack HTTP ingress.
