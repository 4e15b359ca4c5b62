from django.urls import path

from benchmarks.e2e_site import views

urlpatterns = [
    path("ping/", views.ping),
    path("db/pooled_clients/", views.db_pooled_clients),
    path("db/django/", views.db_django),
    path("db/connect/", views.db_connect),
    path("http/pooled_clients/", views.http_pooled_clients),
    path("http/requests/", views.http_requests),
    path("redis/pooled_clients/", views.redis_pooled_clients),
    path("redis/connect/", views.redis_connect),
    path("ws/pooled_clients/", views.ws_pooled_clients),
    path("ws/connect/", views.ws_connect),
    path("grpc/pooled_clients/", views.grpc_pooled_clients),
    path("grpc/connect/", views.grpc_connect),
]
