# A stand-in for DeepVideoDiscovery's dvd/config.py: only the two embedding lines
# that must change with the databases (`migrate plan` warns while they name the old
# model; the cutover prints what to set them to).
AOAI_EMBEDDING_LARGE_MODEL_NAME = "text-embedding-3-large"
AOAI_EMBEDDING_LARGE_DIM = 3072
