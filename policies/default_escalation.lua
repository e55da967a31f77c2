-- The default escalation: a critical incident nobody has acknowledged after 5 minutes pages
-- the on-call (the `oncall` notifier of the config), and after 20 more minutes the incident
-- managers (`managers`). Acknowledging (vigil ack ID, the API or the REPL) stops both; so does
-- the incident resolving.
return {
  name = "default-escalation",
  description = "Critical and unacknowledged: page on-call after 5 m, managers after 25 m",
  match = { severity = "critical" },
  known_issues = false, -- escalation only: fixes are the other policies' business

  escalate = {
    { after = "5m", notify = "oncall", name = "on-call" },
    { after = "25m", notify = "managers", name = "incident managers" },
  },
}
