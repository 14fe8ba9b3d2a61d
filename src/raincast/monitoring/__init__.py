"""Monitoring: data drift (Evidently), batch-job metrics (Pushgateway), traces and logs."""
