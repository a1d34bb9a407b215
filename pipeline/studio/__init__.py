"""The studio: `python -m pipeline serve`, a local web application over an artifact root.

Runs and their progress, a run's grids, curves, metrics and files, runs compared, and the
trained models tried in the browser (inpainting with a brushed mask, DCGAN samples). It
reads everything through pipeline.artifacts (storage, runs), like the CLI and the report,
and serves its own pages, styles and scripts, so it works offline. Nothing on the training
path imports it.
"""

# Where the studio listens unless told otherwise, and the host names its pages answer to.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
