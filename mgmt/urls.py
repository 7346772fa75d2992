from django.urls import include, path

urlpatterns = [
    path("routing/", include("mgmt.routing.urls")),
    path("chat/", include("mgmt.chat.urls")),
    path("", include("mgmt.console.urls")),
]

handler400 = "mgmt.console.views.bad_request"
handler403 = "mgmt.console.views.forbidden"
handler404 = "mgmt.console.views.not_found"
