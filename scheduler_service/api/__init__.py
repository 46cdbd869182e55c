"""The REST API of the scheduler: ``create_app`` builds the FastAPI application."""

from scheduler_service.api.app import create_app

__all__ = ["create_app"]
