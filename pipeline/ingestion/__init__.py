"""From source image files to training shards: decoding one file (decode), decoding a
folder's files in worker processes (pool) and writing the results as shards (shards)."""
