"""The names of things inside an index folder and beside it, in one place."""

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
META = "meta.sqlite"
CHECKPOINT = "checkpoint.json"
VECTORS = "vectors"
THUMBS = "thumbs"
CAST = "cast"  # the cast's portraits, cast/member_<n>.jpg (optional: older indexes have none)
# A build's lock: the building process holds flock(2) on this file in its build folder for the
# build's whole life (so a crashed process holds nothing); it also says who builds (pid, then the
# movie's name, one a line) for the messages of a run that finds it busy.
PID = "pid"
BUILDING_PREFIX = ".building-"  # a build in progress: <index_dir>/.building-<slug>-<key>
OLD_PREFIX = ".old-"  # an index renamed aside while its replacement is swapped in
# The index folder's own lock is flock(2) on the index folder itself (its directory descriptor), not
# a file in it: nothing to create, so readers lock a read-only folder too. Exclusive while what is
# published changes (tidy-up, claiming a build, the swap of a build into place and the removal of
# the `.old-*` it leaves); shared while indexes are listed or loaded (core/store/locks.py).
INDEX_DIR_LOCK = "."
# Preview clips cut on demand (core/clips.py), cached in the movie's folder; optional, rebuilt on need.
CLIPS = "clips"
