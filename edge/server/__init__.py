"""`grok-edge serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn, extra ``server``) over a
continuous-batching scheduler (edge.server.scheduler) on one edge.BatchContext."""
