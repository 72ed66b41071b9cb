"""redis://: the Redis engine (backend.py; its Lua scripts in scripts.lua)."""

from conveyor.backends.redis.backend import RedisBackend

__all__ = ["RedisBackend"]
