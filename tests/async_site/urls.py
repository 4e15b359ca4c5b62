from django.urls import path

from tests.async_site import views

urlpatterns = [
    path("hold/", views.hold),
    path("lag/", views.lag),
    path("idle/", views.idle),
    path("ws-echo/", views.ws_echo),
]
