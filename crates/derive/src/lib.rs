//! `#[derive(Parameters)]` for tapegrad's layers: use it through `tapegrad::nn::Parameters`
//! (tapegrad's default feature `derive`), where it is documented with examples.
//!
//! The derive writes the four walks of `tapegrad::nn::Parameters` from the struct's
//! fields, named after them:
//!
//! - `visit` and `visit_mut`: every `Array2` field is a parameter of its field's name,
//!   an `Option<Array2>` one when it is `Some`; every other field is a layer whose
//!   parameters are prefixed with the field's name (`tapegrad::nn::visit_child`), an
//!   `Option` of a layer when it is `Some`;
//! - `visit_torch_layout`: `Unknown` for the struct's own parameters (the derive cannot
//!   know how PyTorch stores them), the layers' own answers for theirs;
//! - `visit_layers_mut`: the layer fields, which `Module::set_training` walks.
//!
//! Fields of scalar types (`bool`, the integers, `f32`, `f64`, `String`, the float type
//! parameter) and `PhantomData` are skipped, and so is any field marked `#[param(skip)]`.
//! Fields of tuple structs are named by position (`"0"`, `"1"`).
//!
//! The float type is the struct's first type parameter (bounded by `tapegrad::Float` in
//! the impl), or, in a struct without type parameters, the one of `f32` and `f64` that its
//! field types name (`Linear<f32>`); `#[param(float = f64)]` on the struct says it
//! explicitly.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{
    Data, DeriveInput, Error, GenericArgument, Ident, Index, PathArguments, Result, Type,
    parse_macro_input, parse_quote,
};

/// Implements `tapegrad::nn::Parameters` from the struct's fields; see
/// `tapegrad::nn::Parameters` for the rules and examples.
#[proc_macro_derive(Parameters, attributes(param))]
pub fn derive_parameters(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// What a field is to the derive.
enum Role {
    /// `Array2<F>`: a parameter.
    Parameter,
    /// `Option<Array2<F>>`: a parameter when present.
    OptionalParameter,
    /// Another layer.
    Layer,
    /// `Option<Layer>`: a layer when present.
    OptionalLayer,
    /// Not a parameter or a layer (scalars, `#[param(skip)]`).
    Skipped,
}

struct Field {
    /// The field's name in the parameter names.
    name: String,
    /// How to reach it from `self`.
    access: TokenStream2,
    ty: Type,
    role: Role,
    span: Span,
}

fn expand(mut input: DeriveInput) -> Result<TokenStream2> {
    let mut float: Option<Type> = None;
    for attr in &input.attrs {
        if attr.path().is_ident("param") {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("float") {
                    float = Some(meta.value()?.parse()?);
                    Ok(())
                } else {
                    Err(meta
                        .error("on the struct, #[param(...)] takes `float = f32` or `float = f64`"))
                }
            })?;
        }
    }
    let fields = match &input.data {
        Data::Struct(s) => &s.fields,
        Data::Enum(e) => {
            return Err(Error::new(
                e.enum_token.span(),
                "#[derive(Parameters)] takes a struct: an enum's parameters depend on its \
                 variant; implement Parameters by hand",
            ));
        }
        Data::Union(u) => {
            return Err(Error::new(
                u.union_token.span(),
                "#[derive(Parameters)] takes a struct, not a union",
            ));
        }
    };
    let type_params: Vec<Ident> = input
        .generics
        .type_params()
        .map(|p| p.ident.clone())
        .collect();
    let float_param = match (&float, type_params.first()) {
        (Some(Type::Path(p)), _) if p.qself.is_none() => p
            .path
            .get_ident()
            .filter(|i| type_params.contains(i))
            .cloned(),
        (Some(_), _) => None,
        (None, first) => first.cloned(),
    };

    let mut collected = Vec::new();
    for (i, field) in fields.iter().enumerate() {
        let mut skip = false;
        for attr in &field.attrs {
            if attr.path().is_ident("param") {
                attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("skip") {
                        skip = true;
                        Ok(())
                    } else {
                        Err(meta.error("on a field, #[param(...)] takes `skip`"))
                    }
                })?;
            }
        }
        let (name, access) = match &field.ident {
            Some(ident) => (ident.to_string(), quote!(#ident)),
            None => {
                let index = Index::from(i);
                (i.to_string(), quote!(#index))
            }
        };
        let role = if skip {
            Role::Skipped
        } else {
            role_of(&field.ty, float_param.as_ref())
        };
        collected.push(Field {
            name,
            access,
            ty: field.ty.clone(),
            role,
            span: field.ty.span(),
        });
    }
    let float = match (float, &float_param) {
        (Some(f), _) => f,
        (None, Some(p)) => parse_quote!(#p),
        (None, None) => infer_float(&collected)?,
    };

    // the float type parameter is a tapegrad float; layer fields whose types involve a
    // type parameter must be layers of that float
    if let Some(f) = &float_param {
        input
            .generics
            .make_where_clause()
            .predicates
            .push(parse_quote!(#f: ::tapegrad::Float));
    }
    for field in &collected {
        let layer = match field.role {
            Role::Layer => &field.ty,
            Role::OptionalLayer => option_inner(&field.ty).expect("checked by role_of"),
            _ => continue,
        };
        if mentions_any(layer, &type_params) {
            input
                .generics
                .make_where_clause()
                .predicates
                .push(parse_quote!(#layer: ::tapegrad::nn::Module<#float>));
        }
    }

    let name = &input.ident;
    let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
    let mut visit = Vec::new();
    let mut visit_mut = Vec::new();
    let mut torch = Vec::new();
    let mut layers = Vec::new();
    let unknown = quote!(::tapegrad::nn::TorchLayout::Unknown);
    for field in &collected {
        let (label, access, span) = (&field.name, &field.access, field.span);
        match field.role {
            Role::Parameter => {
                visit.push(quote_spanned!(span=> f(#label, &self.#access);));
                visit_mut.push(quote_spanned!(span=> f(#label, &mut self.#access);));
                torch.push(quote_spanned!(span=> f(#label, #unknown);));
            }
            Role::OptionalParameter => {
                visit.push(quote_spanned!(span=>
                    if let ::core::option::Option::Some(p) = &self.#access { f(#label, p); }
                ));
                visit_mut.push(quote_spanned!(span=>
                    if let ::core::option::Option::Some(p) = &mut self.#access { f(#label, p); }
                ));
                torch.push(quote_spanned!(span=>
                    if self.#access.is_some() { f(#label, #unknown); }
                ));
            }
            Role::Layer => {
                visit.push(quote_spanned!(span=>
                    ::tapegrad::nn::visit_child::<#float>(#label, &self.#access, f);
                ));
                visit_mut.push(quote_spanned!(span=>
                    ::tapegrad::nn::visit_child_mut::<#float>(#label, &mut self.#access, f);
                ));
                torch.push(quote_spanned!(span=>
                    ::tapegrad::nn::visit_child_torch_layout::<#float>(#label, &self.#access, f);
                ));
                layers.push(quote_spanned!(span=> f(#label, &mut self.#access);));
            }
            Role::OptionalLayer => {
                visit.push(quote_spanned!(span=>
                    if let ::core::option::Option::Some(c) = &self.#access {
                        ::tapegrad::nn::visit_child::<#float>(#label, c, f);
                    }
                ));
                visit_mut.push(quote_spanned!(span=>
                    if let ::core::option::Option::Some(c) = &mut self.#access {
                        ::tapegrad::nn::visit_child_mut::<#float>(#label, c, f);
                    }
                ));
                torch.push(quote_spanned!(span=>
                    if let ::core::option::Option::Some(c) = &self.#access {
                        ::tapegrad::nn::visit_child_torch_layout::<#float>(#label, c, f);
                    }
                ));
                layers.push(quote_spanned!(span=>
                    if let ::core::option::Option::Some(c) = &mut self.#access { f(#label, c); }
                ));
            }
            Role::Skipped => {}
        }
    }
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics ::tapegrad::nn::Parameters<#float> for #name #type_generics
        #where_clause
        {
            #[allow(unused_variables)]
            fn visit<'__tapegrad_a>(
                &'__tapegrad_a self,
                f: &mut dyn ::core::ops::FnMut(
                    &str,
                    &'__tapegrad_a ::tapegrad::ndarray::Array2<#float>,
                ),
            ) {
                #(#visit)*
            }

            #[allow(unused_variables)]
            fn visit_mut<'__tapegrad_a>(
                &'__tapegrad_a mut self,
                f: &mut dyn ::core::ops::FnMut(
                    &str,
                    &'__tapegrad_a mut ::tapegrad::ndarray::Array2<#float>,
                ),
            ) {
                #(#visit_mut)*
            }

            #[allow(unused_variables)]
            fn visit_torch_layout(
                &self,
                f: &mut dyn ::core::ops::FnMut(&str, ::tapegrad::nn::TorchLayout),
            ) {
                #(#torch)*
            }

            #[allow(unused_variables)]
            fn visit_layers_mut(
                &mut self,
                f: &mut dyn ::core::ops::FnMut(&str, &mut dyn ::tapegrad::nn::Module<#float>),
            ) {
                #(#layers)*
            }
        }
    })
}

/// The last segment of a plain type path, with its generic arguments.
fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        _ => None,
    }
}

/// `T` of `Option<T>`.
fn option_inner(ty: &Type) -> Option<&Type> {
    let segment = last_segment(ty).filter(|s| s.ident == "Option")?;
    match &segment.arguments {
        PathArguments::AngleBracketed(args) => args.args.iter().find_map(|a| match a {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        }),
        _ => None,
    }
}

/// Whether `ty` is an `Array2`.
fn is_array2(ty: &Type) -> bool {
    last_segment(ty).is_some_and(|s| s.ident == "Array2")
}

/// Types that are never parameters or layers.
fn is_scalar(ty: &Type, float_param: Option<&Ident>) -> bool {
    const SCALARS: [&str; 17] = [
        "bool", "char", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64",
        "i128", "isize", "f32", "f64", "String",
    ];
    match ty {
        Type::Reference(_) => true,
        Type::Path(p) if p.qself.is_none() => {
            let Some(segment) = p.path.segments.last() else {
                return false;
            };
            let ident = &segment.ident;
            SCALARS.iter().any(|s| ident == s)
                || ident == "PhantomData"
                || (p.path.segments.len() == 1 && float_param.is_some_and(|f| ident == f))
        }
        _ => false,
    }
}

fn role_of(ty: &Type, float_param: Option<&Ident>) -> Role {
    if is_array2(ty) {
        Role::Parameter
    } else if is_scalar(ty, float_param) {
        Role::Skipped
    } else if let Some(inner) = option_inner(ty) {
        if is_array2(inner) {
            Role::OptionalParameter
        } else if is_scalar(inner, float_param) {
            Role::Skipped
        } else {
            Role::OptionalLayer
        }
    } else {
        Role::Layer
    }
}

/// Whether `ty` names one of `params` anywhere.
fn mentions_any(ty: &Type, params: &[Ident]) -> bool {
    let tokens = quote!(#ty).to_string();
    tokens
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|word| params.iter().any(|p| p == word))
}

/// `f32` or `f64`, whichever the types of the parameter and layer fields name (as
/// `Linear<f32>`, `Array2<f64>`).
fn infer_float(fields: &[Field]) -> Result<Type> {
    let (mut f32_named, mut f64_named) = (false, false);
    for field in fields.iter().filter(|f| !matches!(f.role, Role::Skipped)) {
        let ty = &field.ty;
        let tokens = quote!(#ty).to_string();
        for word in tokens.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            f32_named |= word == "f32";
            f64_named |= word == "f64";
        }
    }
    match (f32_named, f64_named) {
        (true, false) => Ok(parse_quote!(f32)),
        (false, true) => Ok(parse_quote!(f64)),
        _ => Err(Error::new(
            Span::call_site(),
            "#[derive(Parameters)] cannot tell the float type: give the struct a type \
             parameter for it, or say #[param(float = f32)] (or f64)",
        )),
    }
}
