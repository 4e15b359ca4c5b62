from django.urls import path

from tests.lifecycle_site import views

urlpatterns = [
    path("pid/", views.pid),
    path("grpc/", views.grpc_health),
]
