"""`k8s`: Kubernetes objects applied, created, updated, deleted or patched through the dynamic client.

Importing this package does not import the kubernetes client: the cloud imports it to validate tasks.
"""

from executors.k8s.executor import KubernetesExecutor

__all__ = ["KubernetesExecutor"]
