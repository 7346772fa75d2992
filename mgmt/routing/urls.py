from django.urls import path

from . import views

app_name = "routing"
urlpatterns = [
    path("", views.engines, name="engines"),
    path("deployments/<int:deployment_id>/enabled/", views.deployment_enabled, name="deployment_enabled"),
    path("routes/", views.route_set, name="route_set"),
    path("routes/<int:route_id>/delete/", views.route_delete, name="route_delete"),
    path("usage/", views.usage, name="usage"),
]
