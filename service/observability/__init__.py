"""Operations: metrics (Prometheus), logs (JSON or text, one line per call)."""
