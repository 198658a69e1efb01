"""The scaletest: traffic through the cluster under director churn, and its report."""
