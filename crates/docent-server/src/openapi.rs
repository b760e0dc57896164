//! `GET /openapi.json`: the API description, generated from the handlers'
//! annotations and the request/response types.
//!
//! Routes are declared through [`Routes::add`], which takes the path and the
//! methods from the handler's `#[utoipa::path]` and adds its description in
//! the same step, so no route can be served undocumented or documented at a
//! path it is not served at.

use crate::access::Guard;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::routing::{MethodFilter, MethodRouter};
use utoipa::OpenApi;
use utoipa::openapi::Required;
use utoipa::openapi::path::{HttpMethod, ParameterBuilder, ParameterIn, Paths};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "docent",
        description = "Retrieval-augmented question answering over your documents. Errors are `{\"error\": {\"type\", \"message\"}}`. When API keys are configured every /v1 route needs `Authorization: Bearer KEY` with the scope the route names (`read`, `ingest`, `admin`) and the collection in its reach: 401 without a valid key, 403 without the scope or the collection. Every route that acts on a collection is also served at `/v1/collections/{collection}/...`; without one it uses the `collection` query parameter or body field, else the server's default."
    ),
    components(schemas(
        crate::error::ErrorBody,
        docent_query::Citation,
        docent_query::Timings,
        docent_query::Usage,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "ask", description = "Answers with citations"),
        (name = "search", description = "Semantic and keyword search without generation"),
        (name = "documents", description = "The document catalogue: upload, list, delete"),
        (name = "openai", description = "OpenAI-compatible endpoints"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// How [`Routes::add`] serves a handler.
pub(crate) enum Serve {
    AsIs,
    /// With a request body limit other than axum's default.
    BodyLimit(DefaultBodyLimit),
    /// Its last path parameter takes the rest of the path, slashes included
    /// (document ids are paths): documented as `{id}`, routed as `{*id}`.
    RestOfPath,
}

/// A router whose every route carries its OpenAPI description.
pub(crate) struct Routes<S> {
    router: Router<S>,
    paths: Paths,
    schemas: Vec<(String, RefOr<Schema>)>,
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new() -> Self {
        Routes {
            router: Router::new(),
            paths: Paths::new(),
            schemas: Vec::new(),
        }
    }

    /// Serves `handler` at the path and methods of its description `Doc`
    /// (the `__path_*` type `#[utoipa::path]` generates), as `how` says.
    /// `guard` says who may call it; the description says so too.
    pub fn add<Doc, H, T>(mut self, handler: H, how: Serve, guard: Guard) -> Self
    where
        Doc: utoipa::Path + utoipa::__dev::SchemaReferences,
        H: Handler<T, S>,
        T: 'static,
    {
        let path = Doc::path();
        let methods = Doc::methods();
        let mut router = methods.iter().fold(MethodRouter::new(), |router, method| {
            router.on(method_filter(method), handler.clone())
        });
        let mut routed = path.clone();
        match how {
            Serve::AsIs => {}
            Serve::BodyLimit(limit) => router = router.layer(limit),
            Serve::RestOfPath => {
                let at = path
                    .rfind('{')
                    .expect("a rest-of-path route has a parameter");
                routed = format!("{}{{*{}", &path[..at], &path[at + 1..]);
            }
        }
        router = router.layer(axum::middleware::from_fn(move |request, next| {
            guard.check(request, next)
        }));
        self.router = self.router.route(&routed, router);
        let mut operation = Doc::operation();
        let who = guard.describe();
        operation.description = Some(match operation.description.take() {
            Some(d) => format!("{d}\n\n{who}"),
            None => who,
        });
        self.paths.add_path_operation(path, methods, operation);
        Doc::schemas(&mut self.schemas);
        self
    }

    pub fn merge(mut self, other: Routes<S>) -> Self {
        self.router = self.router.merge(other.router);
        self.paths.merge(other.paths);
        self.schemas.extend(other.schemas);
        self
    }

    /// The router and the description of everything it serves.
    pub fn into_parts(self) -> (Router<S>, utoipa::openapi::OpenApi) {
        let mut document = ApiDoc::openapi();
        let mut paths = self.paths;
        let in_collection = in_collection(&paths);
        paths.merge(in_collection);
        document.paths.merge(paths);
        let components = document.components.get_or_insert_with(Default::default);
        for (name, schema) in self.schemas {
            components.schemas.entry(name).or_insert(schema);
        }
        (self.router, document)
    }
}

/// Routes that act on a collection are also served under
/// `/v1/collections/{collection}/`: the same operations, described again at
/// that path with the extra parameter.
fn in_collection(paths: &Paths) -> Paths {
    let mut out = Paths::new();
    for (path, item) in &paths.paths {
        let Some(rest) = path.strip_prefix("/v1/") else {
            continue;
        };
        if ["collections", "models", "embeddings"].contains(&rest) {
            continue;
        }
        let mut item = item.clone();
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            if let Some(id) = &mut operation.operation_id {
                id.push_str("_in_collection");
            }
            operation.parameters.get_or_insert_with(Vec::new).insert(
                0,
                ParameterBuilder::new()
                    .name("collection")
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .description(Some("The collection (otherwise the `collection` query parameter or body field, else the server's default)"))
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                    .build(),
            );
        }
        out.paths
            .insert(format!("/v1/collections/{{collection}}/{rest}"), item);
    }
    out
}

fn method_filter(method: &HttpMethod) -> MethodFilter {
    match method {
        HttpMethod::Get => MethodFilter::GET,
        HttpMethod::Post => MethodFilter::POST,
        HttpMethod::Put => MethodFilter::PUT,
        HttpMethod::Delete => MethodFilter::DELETE,
        HttpMethod::Options => MethodFilter::OPTIONS,
        HttpMethod::Head => MethodFilter::HEAD,
        HttpMethod::Patch => MethodFilter::PATCH,
        HttpMethod::Trace => MethodFilter::TRACE,
    }
}

/// The document served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    crate::routes(&crate::Limits::default()).into_parts().1
}
