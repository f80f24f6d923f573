"""The analysts' console (`detector console`): a Starlette app with server-rendered Jinja2 pages
over its own SQLite copy of the alerts topic, which writes verdicts to the verdicts topic.
Above the core and the Kafka wing; the daemon does not import it."""
