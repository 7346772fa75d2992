from .errors import bad_request, csrf_failure, forbidden, not_found

__all__ = ["bad_request", "csrf_failure", "forbidden", "not_found"]
