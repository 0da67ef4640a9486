"""The names of things inside an index folder and beside it, in one place."""

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
META = "meta.sqlite"
CHECKPOINT = "checkpoint.json"
VECTORS = "vectors"
THUMBS = "thumbs"
PID = "pid"
BUILDING_PREFIX = ".building-"  # a build in progress: <index_dir>/.building-<slug>-<key>
OLD_PREFIX = ".old-"  # an index renamed aside while its replacement is swapped in
