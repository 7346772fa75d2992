from django.urls import include, path

urlpatterns = [
    path("", include("mgmt.console.urls")),
]
