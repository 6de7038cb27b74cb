"""A reference FastAPI integration of vlens-async: see README.md beside this file."""
